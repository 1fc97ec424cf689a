"""UniFormerV2-L/14@336, 64 frames, on Kinetics-400, from k710_v2_l14_8x336; tested on 2 clips x 3 crops;
OpenGVLab top-1 90.0."""

from uniformer_jax import recipes_v2


def get_config():
    return recipes_v2.uniformerv2("k400_k710_v2_l14_64x336", videos=16, nodes=8, lr=1.5e-06, epochs=5, warmup=1,
                                  init="k710_v2_l14_8x336", remat=24)
