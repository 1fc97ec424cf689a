"""UniFormerV2-L/14, 8 frames, on Kinetics-710, from CLIP; tested on 4 clips x 3 crops;
no top-1 published."""

from uniformer_jax import recipes_v2


def get_config():
    return recipes_v2.uniformerv2("k710_v2_l14_8", videos=128, nodes=4, lr=1e-05, epochs=40, warmup=5,
                                  init="ViT-L-14.pt")
