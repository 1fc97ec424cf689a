"""Videos made up for the demo and the web page's examples: a square moving left, right, up or down."""

from __future__ import annotations

import numpy as np

DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
FPS = 10  # the videos' frame rate
CRF = {"crf": "12"}  # their H.264 options: nearly lossless, so the square's edges stay sharp


def moving_square(direction: str, rng: np.random.Generator, frames: int = 16, size: int = 32) -> np.ndarray:
    """A clip of a bright square crossing a dark, noisy frame one pixel a frame.

    Args:
      direction: `left`, `right`, `up` or `down`.
      rng: the random source of the start and the noise.
      frames: the clip's length.
      size: its height and width.

    Returns:
      (T, H, W, 3) uint8.
    """
    dy, dx = DIRECTIONS[direction]
    side = int(rng.integers(5, 9))
    travel = frames - 1
    y0 = rng.integers(0, size - side - (travel if dy else 0) + 1) + (travel if dy < 0 else 0)
    x0 = rng.integers(0, size - side - (travel if dx else 0) + 1) + (travel if dx < 0 else 0)
    background = rng.integers(0, 60, 3)
    colour = rng.integers(150, 256, 3)
    clip = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        image = background + rng.integers(-10, 11, (size, size, 3))
        y, x = y0 + dy * t, x0 + dx * t
        image[y:y + side, x:x + side] = colour
        clip[t] = np.clip(image, 0, 255)
    return clip
