"""UniFormer-S 32 frames on STHV1 (K400-pretrained release): 1 clip x 3 crops; paper top-1 58.8."""

from configs import common


def get_config():
    return common.something("sthv1", "s", frames=32, top1=58.8, gflops=329)
