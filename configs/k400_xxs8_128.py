"""UniFormer-XXS 8 frames at 128x128 on K400: 1 clip x 1 crop of sparse samples; paper top-1 68.3."""

from uniformer_jax import recipes


def get_config():
    return recipes.kinetics_light("xxs", frames=8, crop=128, top1=68.3, gflops=2.0, layer_scale=True)
