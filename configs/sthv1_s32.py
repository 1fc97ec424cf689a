"""UniFormer-S 32 frames on Something-Something V1: 1 clip x 3 crops.

Paper top-1 58.8 (K400-pretrained), 59.9 (K600-pretrained)."""

from uniformer_jax import recipes


def get_config():
    return recipes.something("sthv1", "s", release="sthv1_s32_prek400",
        frames=32, top1=58.8, top1_k600=59.9, gflops=329,
        train=recipes.recipe(videos=32, lr=2e-4, epochs=60, warmup=5, drop_path=0.2, init="k400_s16", flip=False))
