"""Frozen UniFormerV2-L/14@336, 8 frames, on Kinetics-600, from CLIP; tested on 3 clips x 1 crop;
OpenGVLab top-1 87.4."""

from uniformer_jax import recipes_v2


def get_config():
    return recipes_v2.uniformerv2("frozen_k600_v2_l14_8x336", videos=256, nodes=2, lr=0.0008, epochs=50, warmup=0,
                                  init="ViT-L-14-336px.pt")
