"""UniFormer-B 16x4 on K600: 16 frames at rate 4, 4 clips x 1 crop; paper top-1 84.0."""

from configs import common


def get_config():
    return common.kinetics("k600", "b", frames=16, rate=4, top1=84.0, gflops=387)
