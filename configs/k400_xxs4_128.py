"""UniFormer-XXS 4 frames at 128x128 on K400: 1 clip x 1 crop of sparse samples; paper top-1 63.2."""

from uniformer_jax import recipes


def get_config():
    return recipes.kinetics_light("xxs", frames=4, crop=128, top1=63.2, gflops=1.0, layer_scale=True)
