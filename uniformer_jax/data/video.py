"""Reading video files with PyAV: upright RGB frames resized to a short side, optionally resampled to a frame rate;
truncated files are refused."""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont


class VideoError(Exception):
    """A file that cannot be used as a video; the message says why."""


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the shorter side equal to `short_side`, the other rounded to an even number.

    Args:
      width: the frame's width.
      height: the frame's height.
      short_side: the wanted shorter side; None or 0 keeps the size.

    Returns:
      The new (width, height).
    """
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

    Args:
      times: each frame's time in seconds from the first.
      fps: the output frame rate.
      end: the video's duration in seconds.

    Returns:
      The index of the frame each output tick shows.
    """
    ticks = np.arange(int(np.floor(end * fps + 0.5 + 1e-6)))
    kept = np.searchsorted(np.asarray(times) * fps, ticks + 0.5 - 1e-6, side="left") - 1
    return [int(i) for i in np.maximum(kept, 0)]


class Frame(NamedTuple):
    image: np.ndarray  # RGB uint8, upright (the display matrix applied)
    time: float | None  # seconds
    rate: float  # the stream's frame rate
    rotation: int  # degrees counterclockwise the coded frame was turned to stand upright (as ffprobe shows it)


class Video(NamedTuple):
    frames: list[np.ndarray]
    fps: float
    rotation: int


def read_video(path: str | Path, short_side: int | None = None, fps: float | None = None) -> Video:
    """The frames of the first video stream as upright uint8 RGB arrays, their frame rate and rotation.

    Args:
      path: a video file PyAV (ffmpeg) reads.
      short_side: resize (bicubic) so the shorter side has this many pixels; None keeps the size.
      fps: resample to this frame rate by frame time; None keeps the native rate.

    Returns:
      The `Video`: frames, frame rate, and the rotation its display matrix applied.

    Raises:
      VideoError: a missing, unreadable, truncated or empty file, or a directory.
    """
    frames, times = [], []
    native, rotation = 30.0, 0
    for frame in iter_frames(path, short_side):
        image, time, native, rotation = frame  # the rate and rotation are the stream's, the same in every frame
        frames.append(image)
        times.append(time if time is not None else len(times) / native)
    if fps is None:
        return Video(frames, native, rotation)
    times = [t - times[0] for t in times]
    return Video([frames[i] for i in resample(times, fps, times[-1] + 1.0 / native)], float(fps), rotation)


def iter_frames(path: str | Path, short_side: int | None = None):
    """A `Frame` at a time, so a long high-resolution video is never held whole.

    Args:
      path: a video file.
      short_side: resize so the shorter side has this many pixels; None keeps the size.

    Yields:
      Each decoded frame, upright, with its time, the stream's rate and rotation.

    Raises:
      VideoError: as `read_video`; a truncated file's after its last frame.
    """
    path = Path(path)
    if path.is_dir():
        raise VideoError(f"{path} is a directory, not a video file")
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    count, last = 0, 0.0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: the file has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            native = float(stream.average_rate or stream.guessed_rate or 0) or 30.0
            for frame in container.decode(stream):
                count += 1
                last = frame.time if frame.time is not None else count / native
                rotation, turn, swaps = _upright(frame)
                width, height = scaled_size(*((frame.height, frame.width) if swaps else (frame.width, frame.height)),
                                            short_side)
                if swaps:
                    width, height = height, width
                image = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BICUBIC")
                yield Frame(turn(image), frame.time, native, rotation)
            _check_whole(path, container, stream, count, last + 1.0 / native)
    except VideoError:
        raise
    except (av.FFmpegError, ValueError, OSError) as e:
        raise VideoError(f"{path}: cannot decode ({type(e).__name__}: {e})") from e
    if not count:
        raise VideoError(f"{path}: no frames could be decoded")


WHOLE = 0.9  # a file that decodes to less of the frames or seconds its container declares is truncated


def _check_whole(path: Path, container, stream, count: int, seconds: float) -> None:
    """Threaded decoding drops the error of a cut-off last packet, and a cut-off webm raises none: compare what
    decoded with what the container declares."""
    if not count:
        return
    if stream.frames:
        if count < WHOLE * stream.frames:
            raise VideoError(f"{path}: truncated: {count} of {stream.frames} frames decode")
        return
    declared = float(stream.duration * stream.time_base) if stream.duration else (container.duration or 0) / 1e6
    if declared and seconds < WHOLE * declared:
        raise VideoError(f"{path}: truncated: {seconds:.2f} of {declared:.2f} seconds decode")


def _upright(frame) -> tuple[int, Callable[[np.ndarray], np.ndarray], bool]:
    """(rotation in degrees counterclockwise, the function that turns the decoded image upright, whether it swaps
    width and height), from the frame's display matrix as ffmpeg's autorotation reads it."""
    matrix = next((np.frombuffer(memoryview(d), np.int32)[:9] for d in frame.side_data
                   if d.type == av.sidedata.sidedata.Type.DISPLAYMATRIX), None)
    if matrix is None:
        return 0, lambda x: x, False
    m = matrix.astype(np.float64)
    theta = round(float(np.degrees(np.arctan2(m[1] / np.hypot(m[1], m[4]), m[0] / np.hypot(m[0], m[3])))))
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    rotation = (360 - theta) % 360
    if abs(theta - 90) < 1:  # ffmpeg: transpose=cclock_flip (m[3] > 0) or clock
        return rotation, (lambda x: x.transpose(1, 0, 2)) if m[3] > 0 else (lambda x: np.rot90(x, -1)), True
    if abs(theta - 270) < 1:  # transpose=clock_flip (m[3] < 0) or cclock
        return rotation, (lambda x: np.rot90(x, -1)[::-1]) if m[3] < 0 else (lambda x: np.rot90(x, 1)), True
    if abs(theta - 180) < 1:  # hflip if m[0] < 0, vflip if m[4] < 0
        return rotation, lambda x: x[::-1 if m[4] < 0 else 1, ::-1 if m[0] < 0 else 1], False
    return rotation, (lambda x: x[::-1]) if m[4] < 0 else (lambda x: x), False  # ffmpeg turns no other angle


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """A frame as JPEG bytes (PIL).

    Args:
      frame: RGB uint8 (H, W, 3).
      quality: JPEG quality, 1-95.

    Returns:
      The encoded image.
    """
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_frames(path: str, short_side: int | None, fps: float | None, quality: int) -> Video | str:
    """The video with JPEG-encoded frames, or the reason the file cannot be used (for worker pools).

    Args:
      path: a video file.
      short_side: as `read_video`.
      fps: as `read_video`.
      quality: JPEG quality of the frames.

    Returns:
      The `Video` with `bytes` frames, or the `VideoError`'s message.
    """
    try:
        decoded = read_video(path, short_side, fps)
    except VideoError as e:
        return str(e)
    return decoded._replace(frames=[encode_jpeg(f, quality) for f in decoded.frames])


def draw_caption(image: Image.Image, text: str, font: ImageFont.ImageFont) -> None:
    """Draws the text in white on a black box at the image's top left, in place.

    Args:
      image: the frame.
      text: the caption.
      font: its font.
    """
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((4, 4), text, font=font)
    draw.rectangle((0, 0, box[2] + 4, box[3] + 4), fill=(0, 0, 0))
    draw.text((4, 4), text, fill=(255, 255, 255), font=font)


def write_captioned(source: str | Path, out: str | Path, captions: list[tuple[int, str]]) -> None:
    """A copy of a video with a caption drawn on each frame (H.264 through PyAV), written whole or not at all.

    Args:
      source: the video file.
      out: the file to write (its suffix picks the container, e.g. `.mp4`).
      captions: (first frame, text) in order of first frame: a frame shows the last caption that started at or
        before it.

    Raises:
      VideoError: an unreadable source, or a container PyAV cannot write.
    """
    frames = iter_frames(source)
    first = next(frames, None)
    if first is None:
        raise VideoError(f"{source}: no frames")
    starts = [start for start, _ in captions]
    font = ImageFont.load_default(size=max(10, first.image.shape[0] // 2 * 2 // 18))

    def captioned():
        for j, frame in enumerate(itertools.chain([first], frames)):
            image = Image.fromarray(frame.image)
            draw_caption(image, captions[max(0, np.searchsorted(starts, j, side="right") - 1)][1] if captions else "",
                         font)
            yield np.asarray(image)

    write_frames(out, captioned(), first.rate)


def write_frames(out: str | Path, frames: Iterable[np.ndarray], fps: float, options: dict[str, str] | None = None
                 ) -> None:
    """Frames as a video (H.264 through PyAV; odd sides cropped to even), written whole or not at all.

    Args:
      out: the file to write (its suffix picks the container, e.g. `.mp4`).
      frames: (H, W, 3) uint8 frames, e.g. a (T, H, W, 3) array or a generator.
      fps: the frame rate.
      options: libx264's options, e.g. `{"crf": "12"}`; None: its defaults.

    Raises:
      VideoError: a container PyAV cannot write, no frames, or the `VideoError` of a generator's source.
    """
    out = Path(out)
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")  # the suffix tells PyAV the container
    try:
        with av.open(str(partial), "w") as container:
            stream = None
            for image in frames:
                image = np.ascontiguousarray(image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2])
                if stream is None:  # H.264 in yuv420p needs even sides, hence the crop above
                    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                    stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
                    stream.options = options or {}
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            if stream is None:
                raise ValueError("no frames")
            container.mux(stream.encode())
    except (av.FFmpegError, ValueError, OSError) as e:
        partial.unlink(missing_ok=True)
        raise VideoError(f"{out}: cannot write the video ({type(e).__name__}: {e})") from e
    except VideoError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
