"""Predictions over time: the windows of a long video, cut as `python -m uniformer_jax.extract` cuts them, each
with its most likely classes, for a table, JSON lines or a captioned copy of the video."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uniformer_jax import evaluation
from uniformer_jax.data.windows import VideoWindows, Windows, window_spans

BATCH = 8  # windows a step


def windows_of(protocol: evaluation.Protocol, stride: int | None) -> Windows:
    """The windows of a test protocol: its clip's frames and rate, resized and cropped to its crop size.

    Args:
      protocol: the test protocol.
      stride: frames from one window's start to the next; None: frames x rate (windows end to end).

    Returns:
      The `Windows`.
    """
    s = protocol.sampling
    return Windows(s.num_frames, s.rate, stride or s.num_frames * s.rate, protocol.views.crop_size)


def predict_windows(path: str | Path, step, variables, names: list[str], protocol: evaluation.Protocol,
                    windows: Windows) -> dict:
    """Each window's five most likely classes.

    Args:
      path: a video file.
      step: `evaluation.make_step` of the model (each window is one view).
      variables: the model's variables.
      names: the class names.
      protocol: the test protocol (how scores become probabilities).
      windows: how the video is cut.

    Returns:
      `{video, fps, num_frames, windows: [{start_frame, end_frame, start_time, end_time, top5: [{label,
      probability}]}]}`; the end time is that of the end frame's end.

    Raises:
      VideoError: an unreadable, truncated or empty file.
    """
    cut = VideoWindows(path, windows)
    probs, clips = [], []

    def run() -> None:
        # The last batch is padded to BATCH windows: one compiled shape for every video.
        batch = np.stack(clips + [np.zeros_like(clips[0])] * (BATCH - len(clips)))[:, None]
        scores = np.asarray(step(variables, batch))[:len(clips)]
        probs.extend(evaluation.probabilities(scores, protocol, 1))
        clips.clear()

    for _, clip in cut:
        clips.append(clip)
        if len(clips) == BATCH:
            run()
    if clips:
        run()
    spans = window_spans(cut.num_frames, cut.fps, windows)
    for span, p in zip(spans, probs, strict=True):
        span["top5"] = [{"label": names[c], "probability": float(p[c])} for c in np.argsort(-p, kind="stable")[:5]]
    return {"video": str(path), "fps": cut.fps, "num_frames": cut.num_frames, "windows": spans}


def table(result: dict, classes: int = 3) -> str:
    """A timeline as text: the video, then a line a window with its time span and top classes.

    Args:
      result: what `predict_windows` returned.
      classes: the classes shown a window.

    Returns:
      The lines.
    """
    lines = [result["video"]]
    for w in result["windows"]:
        top = "  ".join(f"{p['probability']:7.2%} {p['label']}" for p in w["top5"][:classes])
        lines.append(f"  {w['start_time']:8.2f}-{w['end_time']:8.2f} s  {top}")
    return "\n".join(lines)


def captions(result: dict) -> list[tuple[int, str]]:
    """(first frame, caption) of each window: its top class and probability, for `video.write_captioned`.

    Args:
      result: what `predict_windows` returned.

    Returns:
      The captions in order.
    """
    return [(w["start_frame"], f"{w['top5'][0]['label']} {w['top5'][0]['probability']:.0%}")
            for w in result["windows"]]
