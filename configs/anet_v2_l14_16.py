"""UniFormerV2-L/14, 16 frames, on ActivityNet, from k400_k710_v2_l14_16; tested on 10 clips x 3 crops;
OpenGVLab top-1 94.3."""

from uniformer_jax import recipes_v2


def get_config():
    return recipes_v2.uniformerv2("anet_v2_l14_16", videos=32, nodes=2, lr=5e-06, epochs=20, warmup=5,
                                  init="k400_k710_v2_l14_16", drop_path=0.4, backbone_drop_path=0.2, remat=1)
