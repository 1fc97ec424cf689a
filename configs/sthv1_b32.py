"""UniFormer-B 32 frames on Something-Something V1: 1 clip x 3 crops.

Paper top-1 60.9 (K400-pretrained), 61.0 (K600-pretrained)."""

from uniformer_jax import recipes


def get_config():
    return recipes.something("sthv1", "b", release="sthv1_b32_prek400",
        frames=32, top1=60.9, top1_k600=61.0, gflops=777,
        train=recipes.recipe(videos=32, lr=2e-4, epochs=60, warmup=5, drop_path=0.6, init="k400_b16", flip=False))
