"""UniFormer-B 32 frames on STHV1 (K400-pretrained release): 1 clip x 3 crops; paper top-1 60.9."""

from configs import common


def get_config():
    return common.something("sthv1", "b", frames=32, top1=60.9, gflops=777)
