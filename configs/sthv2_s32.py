"""UniFormer-S 32 frames on STHV2 (K400-pretrained release): 1 clip x 3 crops; paper top-1 69.0."""

from configs import common


def get_config():
    return common.something("sthv2", "s", frames=32, top1=69.0, gflops=329)
