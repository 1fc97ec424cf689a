"""UniFormer-B 16 frames on STHV2 (K400-pretrained release): 1 clip x 3 crops; paper top-1 70.4."""

from configs import common


def get_config():
    return common.something("sthv2", "b", frames=16, top1=70.4, gflops=290)
