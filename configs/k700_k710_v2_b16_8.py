"""UniFormerV2-B/16, 8 frames, on Kinetics-700, from k710_v2_b16_8; tested on 4 clips x 3 crops;
OpenGVLab top-1 76.3."""

from uniformer_jax import recipes_v2


def get_config():
    return recipes_v2.uniformerv2("k700_k710_v2_b16_8", videos=256, nodes=1, lr=2e-06, epochs=5, warmup=1,
                                  init="k710_v2_b16_8")
