"""UniFormer-B 16x8 on K600: 16 frames at rate 8, 4 clips x 1 crop; paper top-1 83.4."""

from configs import common


def get_config():
    return common.kinetics("k600", "b", frames=16, rate=8, top1=83.4, gflops=387)
