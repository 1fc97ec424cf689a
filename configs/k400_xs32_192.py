"""UniFormer-XS 32 frames at 192x192 on K400: 1 clip x 1 crop of sparse samples; paper top-1 78.6."""

from uniformer_jax import recipes


def get_config():
    return recipes.kinetics_light("xs", frames=32, crop=192, top1=78.6, gflops=34.2)
