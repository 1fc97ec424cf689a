"""UniFormer-XXS 4 frames at 160x160 on K400: 1 clip x 1 crop of sparse samples; paper top-1 65.8."""

from uniformer_jax import recipes


def get_config():
    return recipes.kinetics_light("xxs", frames=4, crop=160, top1=65.8, gflops=1.6, layer_scale=True)
