"""UniFormer-S 16 frames on STHV1 (K400-pretrained release): 1 clip x 3 crops; paper top-1 57.2."""

from configs import common


def get_config():
    return common.something("sthv1", "s", frames=16, top1=57.2, gflops=125)
