"""UniFormer-S 8x8 on K400: 8 frames at rate 8, 4 clips x 1 crop; paper top-1 78.4."""

from uniformer_jax import recipes


def get_config():
    return recipes.kinetics("k400", "s", release="k400_s8", frames=8, rate=8, top1=78.4, gflops=70,
        train=recipes.recipe(videos=128, lr=4e-4, epochs=100, warmup=10, drop_path=0.1, init="in1k_s"))
