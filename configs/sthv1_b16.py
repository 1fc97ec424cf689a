"""UniFormer-B 16 frames on STHV1 (K400-pretrained release): 1 clip x 3 crops; paper top-1 59.1."""

from configs import common


def get_config():
    return common.something("sthv1", "b", frames=16, top1=59.1, gflops=290)
