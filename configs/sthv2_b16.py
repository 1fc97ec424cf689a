"""UniFormer-B 16 frames on Something-Something V2: 1 clip x 3 crops.

Paper top-1 70.4 (K400-pretrained), 70.2 (K600-pretrained)."""

from configs import common


def get_config():
    return common.something("sthv2", "b", frames=16, top1=70.4, top1_k600=70.2, gflops=290)
