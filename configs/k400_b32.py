"""UniFormer-B 32x4 on K400: 32 frames at rate 4, 4 clips x 1 crop; paper top-1 82.9."""

from uniformer_jax import recipes


def get_config():
    return recipes.kinetics("k400", "b", release="k400_b32", frames=32, rate=4, top1=82.9, gflops=1036,
        train=recipes.recipe(videos=32, lr=1e-4, epochs=110, warmup=10, drop_path=0.3, init="in1k_b"))
