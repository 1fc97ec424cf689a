"""UniFormer-S 16x4 on K600: 16 frames at rate 4, 4 clips x 1 crop; paper top-1 82.8."""

from configs import common


def get_config():
    return common.kinetics("k600", "s", frames=16, rate=4, top1=82.8, gflops=167)
