"""UniFormer-B 8x8 on K400: 8 frames at rate 8, 4 clips x 1 crop; paper top-1 79.8."""

from uniformer_jax import recipes


def get_config():
    return recipes.kinetics("k400", "b", release="k400_b8", frames=8, rate=8, top1=79.8, gflops=161,
        train=recipes.recipe(videos=64, lr=2e-4, epochs=100, warmup=10, drop_path=0.3, init="in1k_b"))
