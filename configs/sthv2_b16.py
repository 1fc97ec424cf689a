"""UniFormer-B 16 frames on Something-Something V2: 1 clip x 3 crops.

Paper top-1 70.4 (K400-pretrained), 70.2 (K600-pretrained)."""

from uniformer_jax import recipes


def get_config():
    return recipes.something("sthv2", "b", release="sthv2_b16_prek400",
        frames=16, top1=70.4, top1_k600=70.2, gflops=290,
        train=recipes.recipe(videos=40, lr=2.5e-4, epochs=50, warmup=5, drop_path=0.4, init="k400_b16", flip=False))
