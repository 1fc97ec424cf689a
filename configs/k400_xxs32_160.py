"""UniFormer-XXS 32 frames at 160x160 on K400: 1 clip x 1 crop of sparse samples; paper top-1 77.9."""

from uniformer_jax import recipes


def get_config():
    return recipes.kinetics_light("xxs", frames=32, crop=160, top1=77.9, gflops=15.4)
