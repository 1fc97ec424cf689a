"""Heatmaps drawn over a clip's frames, captioned, written as a PNG sheet, an animated GIF or an MP4.

The colours are matplotlib's `jet` (the Grad-CAM paper's); text and files are PIL's, the MP4 PyAV's.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageFont

from uniformer_jax.data import video

FORMATS = (".png", ".gif", ".mp4")
MIN_SIDE = 192  # small clips are enlarged to this short side so that the caption is legible
FPS = 4  # the GIF's and MP4's frame rate: a 16-frame clip plays in 4 s, slow enough to follow the map
COLUMNS = 8  # frames a row of the PNG sheet


def overlay(clip: np.ndarray, heat: np.ndarray, caption: str, opacity: float = 0.45) -> np.ndarray:
    """The frames with the heat in colour over them and a caption at the top.

    Args:
      clip: (T, H, W, 3) uint8.
      heat: (T, H, W) in [0, 1].
      caption: the text drawn on every frame.
      opacity: the colour's weight against the frame.

    Returns:
      (T, H', W', 3) uint8, enlarged to a short side of at least `MIN_SIDE`.
    """
    colours = colormaps["jet"](heat)[..., :3] * 255
    blended = ((1 - opacity) * clip + opacity * colours).round().clip(0, 255).astype(np.uint8)
    scale = max(1, math.ceil(MIN_SIDE / min(clip.shape[1:3])))
    size = (clip.shape[2] * scale, clip.shape[1] * scale)
    font = ImageFont.load_default(size=max(10, size[1] // 14))
    frames = []
    for image in blended:
        image = Image.fromarray(image).resize(size, Image.Resampling.BILINEAR)
        video.draw_caption(image, caption, font)
        frames.append(np.asarray(image))
    return np.stack(frames)


def sheet(frames: np.ndarray) -> np.ndarray:
    """The frames side by side, `COLUMNS` a row, on black.

    Args:
      frames: (T, H, W, 3) uint8.

    Returns:
      (rows·H, columns·W, 3) uint8.
    """
    t, h, w = frames.shape[:3]
    columns = min(t, COLUMNS)
    rows = math.ceil(t / columns)
    out = np.zeros((rows * h, columns * w, 3), np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, columns)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = frame
    return out


def write(out: str | Path, frames: np.ndarray) -> None:
    """Writes the frames by the file's suffix, whole or not at all: `.png` a sheet, `.gif` and `.mp4` the clip.

    Args:
      out: the file.
      frames: (T, H, W, 3) uint8.

    Raises:
      ValueError: another suffix.
      VideoError: an MP4 PyAV cannot write.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{out}: write a {', '.join(FORMATS)} file")
    if suffix == ".mp4":
        video.write_frames(out, frames, FPS)
        return
    partial = out.with_name(f".{out.stem}.partial{suffix}")
    if suffix == ".png":
        Image.fromarray(sheet(frames)).save(partial)
    else:
        images = [Image.fromarray(f) for f in frames]
        images[0].save(partial, save_all=True, append_images=images[1:], duration=1000 // FPS, loop=0)
    partial.replace(out)
