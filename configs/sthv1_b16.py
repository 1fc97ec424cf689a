"""UniFormer-B 16 frames on Something-Something V1: 1 clip x 3 crops.

Paper top-1 59.1 (K400-pretrained), 58.8 (K600-pretrained)."""

from configs import common


def get_config():
    return common.something("sthv1", "b", frames=16, top1=59.1, top1_k600=58.8, gflops=290)
