"""UniFormerV2-L/14, 16 frames, on Something-Something V1, from CLIP; tested on 1 clip x 3 crops;
OpenGVLab top-1 60.5."""

from uniformer_jax import recipes_v2


def get_config():
    return recipes_v2.uniformerv2("sthv1_v2_l14_16", videos=64, nodes=2, lr=2e-05, epochs=22, warmup=5,
                                  init="ViT-L-14.pt", drop_path=0.4, backbone_drop_path=0.2, remat=15)
