"""UniFormer-B 32 frames on Something-Something V2: 1 clip x 3 crops.

Paper top-1 71.1 (K400-pretrained), 71.2 (K600-pretrained)."""

from uniformer_jax import recipes


def get_config():
    return recipes.something("sthv2", "b", release="sthv2_b32_prek400",
        frames=32, top1=71.1, top1_k600=71.2, gflops=777,
        train=recipes.recipe(videos=32, lr=2e-4, epochs=50, warmup=5, drop_path=0.5, init="k400_b16", flip=False))
