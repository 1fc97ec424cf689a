"""UniFormerV2-B/16, 16 frames, on Something-Something V1, from CLIP; tested on 1 clip x 3 crops;
OpenGVLab top-1 56.8."""

from uniformer_jax import recipes_v2


def get_config():
    return recipes_v2.uniformerv2("sthv1_v2_b16_16", videos=128, nodes=1, lr=4e-05, epochs=22, warmup=5,
                                  init="ViT-B-16.pt", drop_path=0.4, backbone_drop_path=0.2)
