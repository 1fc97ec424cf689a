"""UniFormer-B 16x8 on K600: 16 frames at rate 8, 4 clips x 1 crop; paper top-1 83.4."""

from uniformer_jax import recipes


def get_config():
    return recipes.kinetics("k600", "b", release="k600_b16x8", frames=16, rate=8, top1=83.4, gflops=387,
        train=recipes.recipe(videos=32, lr=1.25e-4, epochs=110, warmup=10, drop_path=0.3, init="in1k_b"))
