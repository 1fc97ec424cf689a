"""Sliding windows over long videos: the frames each window takes, and the windows of a file, streamed.

Window k takes frames `k*stride + i*rate` (i < frames) for every k whose last frame is in the video; a video
shorter than one window gives one window at 0 whose missing frames repeat the last frame. Frames are resized as
the test views resize them (short side, bilinear) and centre-cropped square. A file is decoded once, front to
back, holding only the frames of the windows not yet complete.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from uniformer_jax.data import pipelines, video


@dataclasses.dataclass(frozen=True)
class Windows:
    """How a long video is cut: `frames` frames `rate` apart a window, a window every `stride` frames, resized
    and centre-cropped to `size`."""
    frames: int = 16
    rate: int = 4
    stride: int = 64
    size: int = 224

    def __post_init__(self):
        if min(self.frames, self.rate, self.stride, self.size) < 1:
            raise ValueError(f"frames, rate, stride and size must be at least 1; got {self}")

    @property
    def span(self) -> int:
        """Frames from a window's first to its last, both included."""
        return (self.frames - 1) * self.rate + 1


def window_starts(num_frames: int, windows: Windows) -> list[int]:
    """The first frame of each window of a video.

    Args:
      num_frames: the video's decoded frame count.
      windows: how the video is cut.

    Returns:
      `k * stride` for every k whose window ends at or before the last frame; `[0]` for a shorter video.
    """
    last = num_frames - windows.span
    return list(range(0, last + 1, windows.stride)) if last >= 0 else [0]


def window_indices(start: int, num_frames: int, windows: Windows) -> np.ndarray:
    """The frames a window takes, the last frame repeated past the end of the video.

    Args:
      start: the window's first frame.
      num_frames: the video's decoded frame count.
      windows: how the video is cut.

    Returns:
      (frames,) int frame indices.
    """
    return np.minimum(start + windows.rate * np.arange(windows.frames), num_frames - 1)


def window_spans(num_frames: int, fps: float, windows: Windows) -> list[dict]:
    """Each window's first and last frame and their times, for the files and tables that describe windows.

    Args:
      num_frames: the video's decoded frame count.
      fps: its frame rate.
      windows: how the video is cut.

    Returns:
      `{start_frame, end_frame, start_time, end_time}` a window, in order; the end time is that of the last
      frame's end.
    """
    spans = []
    for start in window_starts(num_frames, windows):
        end = int(window_indices(start, num_frames, windows)[-1])
        spans.append({"start_frame": start, "end_frame": end, "start_time": start / fps, "end_time": (end + 1) / fps})
    return spans


def centre_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """The centre `size` x `size` of (N, H, W, 3) frames, offsets rounded up as SlowFast's uniform crop.

    Args:
      frames: frames whose shorter side is at least `size`.
      size: the crop's side.

    Returns:
      (N, size, size, 3).
    """
    y, x = (frames.shape[1] - size + 1) // 2, (frames.shape[2] - size + 1) // 2
    return frames[:, y:y + size, x:x + size]


class VideoWindows:
    """The windows of one video file, in order, as uint8 clips; `num_frames` and `fps` once iterated.

    Iterating decodes the file once; frames no window needs are neither resized nor kept.
    """

    def __init__(self, path: str | Path, windows: Windows):
        self.path, self.windows = Path(path), windows
        self.num_frames: int | None = None
        self.fps: float | None = None

    def _needed(self, j: int) -> bool:
        """Whether frame j belongs to some complete window: k*stride <= j <= k*stride + span - 1, on the rate."""
        w = self.windows
        return any((j - k * w.stride) % w.rate == 0 for k in range(max(0, (j - w.span) // w.stride),
                                                                    j // w.stride + 1)
                   if 0 <= j - k * w.stride < w.span)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yields (first frame, clip (frames, size, size, 3) uint8) for each window.

        Raises:
          VideoError: an unreadable, truncated or empty file.
        """
        w = self.windows
        held: dict[int, np.ndarray] = {}  # resized frames of windows not yet complete
        pending: list[tuple[int, np.ndarray]] = []  # decoded frames waiting to be resized
        last = None  # the last decoded frame, for a video shorter than a window
        emitted, count = 0, 0  # windows given, frames decoded
        for frame in video.iter_frames(self.path):
            if self.fps is None:
                self.fps = frame.rate
            last = (count, frame.image)
            if self._needed(count):
                pending.append(last)
            count += 1
            if len(pending) == pipelines.RESIZE_CHUNK:
                self._resize_into(held, pending)
            while count >= emitted * w.stride + w.span:  # window `emitted` is decoded
                self._resize_into(held, pending)
                start = emitted * w.stride
                yield start, np.stack([held[j] for j in window_indices(start, count, w)])
                emitted += 1
                for j in [j for j in held if j < emitted * w.stride]:
                    del held[j]
        self.num_frames = count
        if emitted == 0:  # shorter than one window: its frames, the last repeated
            if last is not None and last[0] not in held and all(j != last[0] for j, _ in pending):
                pending.append(last)
            self._resize_into(held, pending)
            yield 0, np.stack([held[j] for j in window_indices(0, count, w)])

    def _resize_into(self, held: dict, pending: list) -> None:
        if pending:
            resized = pipelines.resize_short_side(np.stack([image for _, image in pending]), self.windows.size)
            for (j, _), image in zip(pending, centre_crop(resized.numpy(), self.windows.size), strict=True):
                held[j] = image
            pending.clear()
