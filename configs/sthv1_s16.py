"""UniFormer-S 16 frames on Something-Something V1: 1 clip x 3 crops.

Paper top-1 57.2 (K400-pretrained), 57.6 (K600-pretrained)."""

from uniformer_jax import recipes


def get_config():
    return recipes.something("sthv1", "s", release="sthv1_s16_prek400",
        frames=16, top1=57.2, top1_k600=57.6, gflops=125,
        train=recipes.recipe(videos=32, lr=2e-4, epochs=60, warmup=5, drop_path=0.2, init="k400_s16", flip=False))
