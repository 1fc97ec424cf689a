"""Small video files made with PyAV whose pixels tell which frame and which columns a clip holds."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

LEVELS = 12  # index digits per channel; 12 * 12 frames at most
STEP = 256 // LEVELS


def frame(index: int, width: int, height: int) -> np.ndarray:
    """Red and blue hold the frame index (low and high digit); green rises from 0 at the left to 255 at the right."""
    out = np.empty((height, width, 3), np.uint8)
    out[..., 0] = (index % LEVELS) * STEP + STEP // 2
    out[..., 2] = (index // LEVELS) * STEP + STEP // 2
    out[..., 1] = np.round(np.linspace(0, 255, width))[None, :]
    return out


def frame_index(image: np.ndarray) -> int:
    """The index `frame` wrote, read back from a decoded (and resized, cropped, flipped) frame."""
    image = np.asarray(image, np.float64)
    return int(image[..., 0].mean() // STEP) + LEVELS * int(image[..., 2].mean() // STEP)


def write_video(path: Path, num_frames: int, fps: float = 25, width: int = 160, height: int = 120,
                codec: str = "libx264", options: dict | None = None, display_matrix=None) -> Path:
    """`options` are the container's (e.g. {"movflags": "+faststart"}); `display_matrix` (9 ints, 16.16 fixed
    point as ffmpeg stores it) tells players how to turn the coded frames."""
    assert num_frames <= LEVELS * LEVELS
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if display_matrix is not None:
            stream.set_display_matrix(display_matrix)
        if codec == "libx264":
            stream.options = {"crf": "10", "g": "16"}
        for i in range(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame(i, width, height), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def ffmpeg_fps_indices(path: Path, fps: float) -> list[int]:
    """The frame indices that ffmpeg's own fps filter (default options, run through PyAV) keeps from `path`."""
    kept = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        graph = av.filter.Graph()
        source, sink = graph.add_buffer(template=stream), graph.add("buffersink")
        fps_filter = graph.add("fps", f"fps={fps}")
        source.link_to(fps_filter)
        fps_filter.link_to(sink)
        graph.configure()

        def drain():
            while True:
                try:
                    kept.append(frame_index(graph.pull().to_ndarray(format="rgb24")))
                except (av.BlockingIOError, av.EOFError):
                    return

        for decoded in container.decode(stream):
            graph.push(decoded)
            drain()
        graph.push(None)
        drain()
    return kept
