"""UniFormer-XXS 16 frames at 160x160 on K400: 1 clip x 1 crop of sparse samples; paper top-1 75.1."""

from uniformer_jax import recipes


def get_config():
    return recipes.kinetics_light("xxs", frames=16, crop=160, top1=75.1, gflops=6.9)
