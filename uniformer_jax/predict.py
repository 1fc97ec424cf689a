"""The top-5 classes of video files, with the test protocol eval.py uses.

    python -m uniformer_jax.predict VIDEO [VIDEO ...] --checkpoint k400_s16 [--labels FILE] [--json]
    python -m uniformer_jax.predict clip.mp4 --config configs/sthv2_s16.py
    python -m uniformer_jax.predict long.mp4 --checkpoint k400_s16 --timeline [--stride 32] [--render out.mp4]

--checkpoint takes a released model's name (fetched and converted once, then cached), a converted directory or a
.pth file; with --config it defaults to the config's checkpoint or release.

Without --config the protocol is Kinetics' (16 frames at rate 4, 4 clips x 1 centre crop, short side 224; for a
UniFormerV2, 8 frames over the whole video, 4 clips x 3 crops, as its authors test);
a config file from configs/ sets the protocol of its model (and `--config.data.num_frames=32` etc. override it).
A model trained multi-label (`data.multi_label`) gives each class its own sigmoid probability. --timeline cuts the
video into windows of one clip each (as `python -m uniformer_jax.extract` does, every frames x rate frames unless
--stride says otherwise) and gives each window's time span and classes, a line or (--json) an object a window;
--render OUT.mp4 also writes the video with each window's top class and probability drawn on it.
A missing, unreadable or too-short video is reported and the others still run; the exit status is 1 then.
"""

from __future__ import annotations

from uniformer_jax import console

if __name__ == "__main__":
    console.quiet_startup()  # before TensorFlow loads

import json
import sys

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from uniformer_jax import evaluation, inference, timeline
from uniformer_jax.data import video
from uniformer_jax.weights.checkpoints import CheckpointError, load_directory

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "a config file from configs/ whose test protocol to use (default: Kinetics 16x4, 4x1 views)",
    lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "a release name, converted directory or .pth file "
                                                      "(default: the config's)")
_LABELS = flags.DEFINE_string("labels", None, "class names in head order: a file or a short name such as "
                                              "k400-sensex (default: the checkpoint's)")
_JSON = flags.DEFINE_bool("json", False, "print one JSON object a video (a window, with --timeline) instead of text")
_TIMELINE = flags.DEFINE_bool("timeline", False, "classes of each window of one clip over the video, with its times")
_STRIDE = flags.DEFINE_integer("stride", None, "with --timeline: frames from one window's start to the next "
                               "(default: frames x rate)")
_RENDER = flags.DEFINE_string("render", None, "write the video (one video given) with each window's top class "
                              "drawn on it to this file, e.g. out.mp4")


def predict(paths: list[str], checkpoint: str, protocol: evaluation.Protocol, labels_file: str | None = None,
            windows: timeline.Windows | None = None):
    """The five most likely classes of each video, or of each window of it.

    Args:
      paths: video files.
      checkpoint: a converted directory.
      protocol: the test protocol.
      labels_file: as `class_names`'.
      windows: how to cut each video into windows of one clip (`timeline.windows_of`); None: the protocol's
        views of the whole video.

    Yields:
      `{video, top5: [{label, probability}]}` (with `windows`: `timeline.predict_windows`' result), or
      `{video, error}`, for each path in order; multi-label, the probabilities are each class's sigmoid and
      `multi_label` is true.
    """
    model, variables = load_directory(checkpoint, dtype=protocol.compute_dtype, attention=protocol.attention)
    names = inference.class_names(checkpoint, labels_file, model.num_classes)
    step = evaluation.make_step(model, protocol.aggregate, protocol.compute_dtype, protocol.multi_label)
    multi = {"multi_label": True} if protocol.multi_label else {}
    for path in paths:
        try:
            if windows is not None:
                yield {**timeline.predict_windows(path, step, variables, names, protocol, windows), **multi}
                continue
            views = inference.load_views(path, protocol.sampling, protocol.views)
        except video.VideoError as e:
            yield {"video": path, "error": str(e)}
            continue
        scores = np.asarray(step(variables, views[None]))[0]
        probs = evaluation.probabilities(scores, protocol, len(views))
        top = np.argsort(-probs, kind="stable")[:5]
        yield {"video": path, "top5": [{"label": names[c], "probability": float(probs[c])} for c in top], **multi}


def show_timeline(result: dict) -> None:
    """Prints a video's windows (a table, or a JSON object a window) and writes --render's video."""
    if _JSON.value:
        head = {k: v for k, v in result.items() if k != "windows"}
        for w in result["windows"]:
            print(json.dumps({**head, **w}), flush=True)
    else:
        print(timeline.table(result), flush=True)
    if _RENDER.value:
        video.write_captioned(result["video"], _RENDER.value, timeline.captions(result))
        if not _JSON.value:
            print(f"rendered to {_RENDER.value}", flush=True)


def main(argv):
    """`python -m uniformer_jax.predict VIDEO ...`: exit status 1 where a video could not be read.

    Args:
      argv: the program name and the video files.
    """
    console.quiet_logging()
    paths = argv[1:]
    config = _CONFIG.value
    checkpoint = inference.checkpoint_of(_CHECKPOINT.value, config)
    if not paths:
        sys.exit("error: name at least one video file: python -m uniformer_jax.predict VIDEO ... --checkpoint NAME")
    if checkpoint is None:
        sys.exit(f"error: {inference.NO_CHECKPOINT}")
    if _RENDER.value and len(paths) != 1:
        sys.exit(f"error: --render writes one video; name one video file, not {len(paths)}")
    if _STRIDE.value is not None and not (_TIMELINE.value or _RENDER.value):
        sys.exit("error: --stride cuts the video into windows: add --timeline")
    failed = False
    try:
        directory, protocol = inference.resolve(checkpoint, config)
        windows = timeline.windows_of(protocol, _STRIDE.value) if _TIMELINE.value or _RENDER.value else None
        for result in predict(paths, str(directory), protocol, _LABELS.value, windows):
            failed |= "error" in result
            if "error" in result and not _JSON.value:
                print(f"error: {result['error']}", file=sys.stderr, flush=True)
            elif windows is not None and "error" not in result:
                show_timeline(result)
            elif _JSON.value:
                print(json.dumps(result), flush=True)
            else:
                lines = [f"  {p['probability']:7.2%}  {p['label']}" for p in result["top5"]]
                each = " (multi-label: each class's own probability)" if protocol.multi_label else ""
                print("\n".join([result["video"] + each, *lines]), flush=True)
    except (CheckpointError, ValueError, video.VideoError) as e:  # ConfigError, DataError, label files: ValueErrors
        sys.exit(f"error: {e}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    app.run(main)
