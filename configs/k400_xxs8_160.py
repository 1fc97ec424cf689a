"""UniFormer-XXS 8 frames at 160x160 on K400: 1 clip x 1 crop of sparse samples; paper top-1 71.4."""

from uniformer_jax import recipes


def get_config():
    return recipes.kinetics_light("xxs", frames=8, crop=160, top1=71.4, gflops=3.3)
