"""UniFormer-S 32 frames on Something-Something V2: 1 clip x 3 crops.

Paper top-1 69.0 (K400-pretrained), 70.4 (K600-pretrained)."""

from uniformer_jax import recipes


def get_config():
    return recipes.something("sthv2", "s", release="sthv2_s32_prek400",
        frames=32, top1=69.0, top1_k600=70.4, gflops=329,
        train=recipes.recipe(videos=32, lr=2e-4, epochs=50, warmup=5, drop_path=0.3, init="k400_s16", flip=False))
