"""UniFormer-B 16x8 on K400: 16 frames at rate 8, 4 clips x 1 crop; paper top-1 81.7."""

from uniformer_jax import recipes


def get_config():
    return recipes.kinetics("k400", "b", release="k400_b16x8", frames=16, rate=8, top1=81.7, gflops=387,
        train=recipes.recipe(videos=40, lr=1.25e-4, epochs=110, warmup=10, drop_path=0.3, init="in1k_b"))
