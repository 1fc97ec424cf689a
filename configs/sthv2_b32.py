"""UniFormer-B 32 frames on STHV2 (K400-pretrained release): 1 clip x 3 crops; paper top-1 71.1."""

from configs import common


def get_config():
    return common.something("sthv2", "b", frames=32, top1=71.1, gflops=777)
