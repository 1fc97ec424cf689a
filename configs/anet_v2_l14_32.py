"""UniFormerV2-L/14, 32 frames, on ActivityNet, from k400_k710_v2_l14_32; tested on 10 clips x 3 crops;
OpenGVLab top-1 94.7."""

from uniformer_jax import recipes_v2


def get_config():
    return recipes_v2.uniformerv2("anet_v2_l14_32", videos=16, nodes=4, lr=5e-06, epochs=20, warmup=5,
                                  init="k400_k710_v2_l14_32", drop_path=0.4, backbone_drop_path=0.2, remat=1)
