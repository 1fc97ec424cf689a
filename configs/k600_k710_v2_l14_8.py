"""UniFormerV2-L/14, 8 frames, on Kinetics-600, from k710_v2_l14_8; tested on 4 clips x 3 crops;
OpenGVLab top-1 89.0."""

from uniformer_jax import recipes_v2


def get_config():
    return recipes_v2.uniformerv2("k600_k710_v2_l14_8", videos=128, nodes=2, lr=1.5e-06, epochs=5, warmup=1,
                                  init="k710_v2_l14_8")
