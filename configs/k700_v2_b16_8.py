"""UniFormerV2-B/16, 8 frames, on Kinetics-700, from CLIP; tested on 4 clips x 3 crops;
OpenGVLab top-1 75.8."""

from uniformer_jax import recipes_v2


def get_config():
    return recipes_v2.uniformerv2("k700_v2_b16_8", videos=256, nodes=1, lr=1e-05, epochs=55, warmup=5,
                                  init="ViT-B-16.pt")
