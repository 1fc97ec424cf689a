"""Frozen UniFormerV2-L/14@336, 8 frames, on Kinetics-710, from CLIP; tested on 3 clips x 1 crop;
no top-1 published."""

from uniformer_jax import recipes_v2


def get_config():
    return recipes_v2.uniformerv2("frozen_k710_v2_l14_8x336", videos=128, nodes=4, lr=0.0008, epochs=50, warmup=0,
                                  init="ViT-L-14-336px.pt")
