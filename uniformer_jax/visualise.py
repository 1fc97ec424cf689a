"""Where the model looks in a video: the clip it sees, every frame with a heatmap of what drove a class over it.

    python -m uniformer_jax.visualise VIDEO --checkpoint k400_s16 --out look.png      # a sheet of the frames
    python -m uniformer_jax.visualise VIDEO --checkpoint CKPT --out look.gif --class "playing guitar"
    python -m uniformer_jax.visualise VIDEO --config configs/motion.py --checkpoint runs/motion/model \\
        --out look.mp4 --method attention

The clip is the test protocol's centre clip and centre crop (the checkpoint's, or --config's); the class is the
model's top-1 unless --class names another, and its name and probability (on that one clip) are written on every
frame. --method gradcam (the default) is Grad-CAM on the deepest map with at least 8 positions a side (stage 3 at
224x224; UniFormerV2: the last block's patch tokens), or on --layer; --method attention shows attention rollout
of stages 3-4 (UniFormer), the class token's carried attention score (XXS/XS) or the global UniBlocks'
cross-attention (UniFormerV2); `uniformer_jax.saliency` says how each is computed. OUT's suffix picks the file:
.png (the frames side by side), .gif or .mp4 (the clip at 4 frames a second).
"""

from __future__ import annotations

from uniformer_jax import console

if __name__ == "__main__":
    console.quiet_startup()  # before TensorFlow loads

import sys
import time

from absl import app, flags
from ml_collections import config_flags

from uniformer_jax import inference, overlays, saliency
from uniformer_jax.data import pipelines, video
from uniformer_jax.weights.checkpoints import CheckpointError, load_directory

_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file from configs/ whose test protocol to use",
                                          lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "a release name, converted directory or .pth file "
                                                      "(default: the config's)")
_OUT = flags.DEFINE_string("out", None, "the file to write: .png, .gif or .mp4")
_CLASS = flags.DEFINE_string("class", None, "the class to explain, by name (default: the top-1)")
_METHOD = flags.DEFINE_enum("method", "gradcam", saliency.METHODS, "how the heatmap is made")
_LAYER = flags.DEFINE_string("layer", None, "gradcam's feature map: stage1..stage4 (UniFormer), layer1..layerN "
                                            "(UniFormerV2); default: see --help")
_LABELS = flags.DEFINE_string("labels", None, "class names in head order: a file or a short name such as "
                                              "k400-sensex (default: the checkpoint's)")


def main(argv):
    """`python -m uniformer_jax.visualise VIDEO --checkpoint CKPT --out OUT`.

    Args:
      argv: the program name and one video file.
    """
    console.quiet_logging()
    config = _CONFIG.value
    checkpoint = inference.checkpoint_of(_CHECKPOINT.value, config)
    if len(argv) != 2:
        sys.exit("error: name one video file: python -m uniformer_jax.visualise VIDEO --checkpoint NAME --out OUT.png")
    if checkpoint is None:
        sys.exit(f"error: {inference.NO_CHECKPOINT}")
    if _OUT.value is None or not _OUT.value.lower().endswith(overlays.FORMATS):
        sys.exit(f"error: set --out to the file to write, ending in {', '.join(overlays.FORMATS)}")
    try:
        directory, protocol = inference.resolve(checkpoint, config)
        model, variables = load_directory(directory, dtype=protocol.compute_dtype)
        names = inference.class_names(directory, _LABELS.value, model.num_classes)
        if _CLASS.value is not None and _CLASS.value not in names:
            raise ValueError(f"--class {_CLASS.value!r} is not one of the model's classes ({', '.join(names[:5])}"
                             f"{', ...' if len(names) > 5 else ''}; python -m uniformer_jax.labels lists them)")
        target = None if _CLASS.value is None else names.index(_CLASS.value)
        clip = inference.centre_clip(argv[1], protocol)
        start = time.perf_counter()
        heatmap = saliency.explain(model, variables, clip, _METHOD.value, target, _LAYER.value)
        seconds = time.perf_counter() - start
        label = names[heatmap.target]
        probability = heatmap.probabilities[heatmap.target]
        what = heatmap.method + (f" {heatmap.layer}" if heatmap.layer else "")
        frames = overlays.overlay(clip, heatmap.heat, f"{label} {probability:.1%} ({what})")
        overlays.write(_OUT.value, frames)
    except (CheckpointError, ValueError, video.VideoError, pipelines.DataError) as e:
        sys.exit(f"error: {e}")
    print(f"{label} {probability:.1%}: {what} heatmap of {len(clip)} frames in {seconds:.1f} s -> {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
