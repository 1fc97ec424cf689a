"""UniFormerV2-L/14@336, 8 frames, on Moments in Time, from k400_k710_v2_l14_8x336; tested on 4 clips x 3 crops;
OpenGVLab top-1 47.8."""

from uniformer_jax import recipes_v2


def get_config():
    return recipes_v2.uniformerv2("mit_v2_l14_8x336", videos=128, nodes=4, lr=1e-05, epochs=18, warmup=5,
                                  init="k400_k710_v2_l14_8x336", remat=21)
