"""UniFormer-S 16 frames on Something-Something V2: 1 clip x 3 crops.

Paper top-1 67.7 (K400-pretrained), 69.4 (K600-pretrained)."""

from uniformer_jax import recipes


def get_config():
    return recipes.something("sthv2", "s", release="sthv2_s16_prek400",
        frames=16, top1=67.7, top1_k600=69.4, gflops=125,
        train=recipes.recipe(videos=32, lr=2e-4, epochs=50, warmup=5, drop_path=0.3, init="k400_s16", flip=False))
