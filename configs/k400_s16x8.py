"""UniFormer-S 16x8 on K400: 16 frames at rate 8, 4 clips x 1 crop; paper top-1 80.8."""

from uniformer_jax import recipes


def get_config():
    return recipes.kinetics("k400", "s", release="k400_s16x8", frames=16, rate=8, top1=80.8, gflops=167,
        train=recipes.recipe(videos=32, lr=1e-4, epochs=110, warmup=10, drop_path=0.1, init="in1k_s"))
