"""UniFormer-B 16x4 on K600: 16 frames at rate 4, 4 clips x 1 crop; paper top-1 84.0."""

from uniformer_jax import recipes


def get_config():
    return recipes.kinetics("k600", "b", release="k600_b16", frames=16, rate=4, top1=84.0, gflops=387,
        train=recipes.recipe(videos=40, lr=1.25e-4, epochs=110, warmup=10, drop_path=0.3, init="in1k_b"))
