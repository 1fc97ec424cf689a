"""UniFormerV2-B/16, 8 frames, on Moments in Time, from k400_k710_v2_b16_8; tested on 4 clips x 3 crops;
OpenGVLab top-1 42.6."""

from uniformer_jax import recipes_v2


def get_config():
    return recipes_v2.uniformerv2("mit_v2_b16_8", videos=256, nodes=2, lr=2e-05, epochs=24, warmup=5,
                                  init="k400_k710_v2_b16_8")
