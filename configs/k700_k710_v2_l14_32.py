"""UniFormerV2-L/14, 32 frames, on Kinetics-700, from k710_v2_l14_8; tested on 2 clips x 3 crops;
OpenGVLab top-1 81.5."""

from uniformer_jax import recipes_v2


def get_config():
    return recipes_v2.uniformerv2("k700_k710_v2_l14_32", videos=32, nodes=4, lr=1.5e-06, epochs=5, warmup=1,
                                  init="k710_v2_l14_8")
