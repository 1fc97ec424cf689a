"""Frozen UniFormerV2-L/14@336, 32 frames, on Kinetics-400, from frozen_k710_v2_l14_8x336; tested on 4 clips x 3 crops;
OpenGVLab top-1 88.9."""

from uniformer_jax import recipes_v2


def get_config():
    return recipes_v2.uniformerv2("frozen_k400_k710_v2_l14_32x336", videos=128, nodes=2, lr=5e-05, epochs=5,
                                  warmup=1, init="frozen_k710_v2_l14_8x336")
