"""Reading video files with PyAV: RGB frames resized to a short side, optionally resampled to a frame rate."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
from PIL import Image


class VideoError(Exception):
    """A file that cannot be used as a video; the message says why."""


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the shorter side equal to short_side, the other rounded to an even number."""
    if not short_side:
        return width, height
    if width <= height:
        return short_side, 2 * round(height * short_side / width / 2)
    return 2 * round(width * short_side / height / 2), short_side


def resample(times: list[float], fps: float, end: float) -> list[int]:
    """The frames ffmpeg's fps filter keeps at its default rounding (`round=near`), as DMVR's script extracts them.

    A frame's time in output ticks is rounded to the nearest tick (halves up); tick k shows the last frame rounded
    to at most k, and a video of duration `end` has `end * fps` ticks, rounded the same way. At 30 fps -> 10 fps this
    keeps frames 1, 4, 7, ... (`round=up` would keep 0, 3, 6, ...).
    """
    ticks = np.arange(int(np.floor(end * fps + 0.5 + 1e-6)))
    kept = np.searchsorted(np.asarray(times) * fps, ticks + 0.5 - 1e-6, side="left") - 1
    return [int(i) for i in np.maximum(kept, 0)]


def read_video(path: str | Path, short_side: int | None = None, fps: float | None = None
               ) -> tuple[list[np.ndarray], float]:
    """The frames of the first video stream as uint8 RGB arrays, and their frame rate.

    `short_side` resizes (bicubic); `fps` resamples to that rate by frame time. Raises VideoError for a
    missing, unreadable, truncated or empty file.
    """
    frames, times = [], []
    native = 30.0
    for image, time, native in iter_frames(path, short_side):
        frames.append(image)
        times.append(time if time is not None else len(times) / native)
    if fps is None:
        return frames, native
    times = [t - times[0] for t in times]
    return [frames[i] for i in resample(times, fps, times[-1] + 1.0 / native)], float(fps)


def iter_frames(path: str | Path, short_side: int | None = None):
    """Yields (RGB uint8 frame, time in seconds or None, stream frame rate) one decoded frame at a time, so a
    long high-resolution video is never held whole. Raises VideoError as read_video."""
    path = Path(path)
    if path.is_dir():
        raise VideoError(f"{path} is a directory, not a video file")
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    count = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: the file has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            native = float(stream.average_rate or stream.guessed_rate or 0) or 30.0
            width, height = scaled_size(stream.codec_context.width, stream.codec_context.height, short_side)
            for frame in container.decode(stream):
                count += 1
                yield frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BICUBIC"), \
                    frame.time, native
    except VideoError:
        raise
    except (av.FFmpegError, ValueError, OSError) as e:
        raise VideoError(f"{path}: cannot decode ({type(e).__name__}: {e})") from e
    if not count:
        raise VideoError(f"{path}: no frames could be decoded")


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_frames(path: str, short_side: int | None, fps: float | None, quality: int
                ) -> tuple[list[bytes], float] | str:
    """JPEG-encoded frames and their frame rate, or the reason the file cannot be used (for worker pools)."""
    try:
        frames, rate = read_video(path, short_side, fps)
    except VideoError as e:
        return str(e)
    return [encode_jpeg(f, quality) for f in frames], rate
