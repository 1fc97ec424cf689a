"""UniFormer-B 8x8 on K400: 8 frames at rate 8, 4 clips x 1 crop; paper top-1 79.8."""

from configs import common


def get_config():
    return common.kinetics("k400", "b", frames=8, rate=8, top1=79.8, gflops=161)
