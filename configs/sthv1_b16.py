"""UniFormer-B 16 frames on Something-Something V1: 1 clip x 3 crops.

Paper top-1 59.1 (K400-pretrained), 58.8 (K600-pretrained)."""

from uniformer_jax import recipes


def get_config():
    return recipes.something("sthv1", "b", release="sthv1_b16_prek400",
        frames=16, top1=59.1, top1_k600=58.8, gflops=290,
        train=recipes.recipe(videos=40, lr=2.5e-4, epochs=60, warmup=5, drop_path=0.6, init="k400_b16", flip=False))
