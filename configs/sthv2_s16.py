"""UniFormer-S 16 frames on STHV2 (K400-pretrained release): 1 clip x 3 crops; paper top-1 67.7."""

from configs import common


def get_config():
    return common.something("sthv2", "s", frames=16, top1=67.7, gflops=125)
