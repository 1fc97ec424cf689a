"""A checkpoint as a StableHLO, ONNX or LiteRT file that runs without this project, and a check of such a file.

    python -m uniformer_jax.export CKPT OUT --format stablehlo|onnx|tflite [--batch B] [--dtype float32|bfloat16]
        [--platforms cpu,cuda,tpu] [--quantize int8] [--frames T --size S] [--config FILE] [--labels FILE]
    python -m uniformer_jax.export --check OUT

CKPT is a released model's name, a converted directory or a .pth file; the clip's frames and size are its
protocol's (a release's configs/ file, --config, or Kinetics' 16 x 224), or --frames/--size. The program takes
uint8 RGB clips (B, T, H, W, 3), normalises them inside and returns float32 logits; OUT.json beside it holds the
class names, frames, sampling rate and mode, crop size, the input's name and shape and the checkpoint's sha256.
Without --batch a StableHLO program takes any batch; ONNX and LiteRT files take --batch (default 1).
--quantize int8 (LiteRT only) stores the weights as int8 (dynamic-range quantisation). --check runs OUT in its
runtime and the checkpoint it came from in JAX on the same random clip and prints the largest logit difference;
a float32 file that differs by more than 1e-4 fails (exit status 1).
"""

from __future__ import annotations

from uniformer_jax import console

if __name__ == "__main__":
    console.quiet_startup()  # before TensorFlow loads

import sys

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from uniformer_jax import exporting, inference, runtimes
from uniformer_jax.weights.checkpoints import CheckpointError, load_directory, read_metadata

TOLERANCE = 1e-4  # float32 logits, as the model against the PyTorch originals

_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file from configs/ whose clip shape to export",
                                          lock_config=True)
_FORMAT = flags.DEFINE_enum("format", None, list(exporting.FORMATS), "the file's format")
_BATCH = flags.DEFINE_integer("batch", None, "clips a call (default: any, for stablehlo; 1 otherwise)")
_DTYPE = flags.DEFINE_enum("dtype", "float32", list(exporting.DTYPES), "the compute dtype inside the program")
_PLATFORMS = flags.DEFINE_list("platforms", list(exporting.PLATFORMS), "stablehlo: the platforms it runs on")
_QUANTIZE = flags.DEFINE_enum("quantize", None, ["int8"], "tflite: int8 weights (dynamic-range quantisation)")
_FRAMES = flags.DEFINE_integer("frames", None, "frames of a clip (default: the checkpoint's protocol)")
_SIZE = flags.DEFINE_integer("size", None, "a frame's height and width (default: the protocol's crop)")
_LABELS = flags.DEFINE_string("labels", None, "class names in head order: a file or a short name such as "
                                              "k400-sensex (default: the checkpoint's)")
_CHECK = flags.DEFINE_string("check", None, "an exported file to run against its checkpoint")


def write(checkpoint: str, out: str, config=None) -> dict:
    """Exports a checkpoint as the flags say.

    Args:
      checkpoint: a release name, converted directory or .pth file.
      out: the file to write.
      config: a config from configs/, or None.

    Returns:
      The sidecar written beside `out`.
    """
    target = exporting.Target(_FORMAT.value, _BATCH.value, _DTYPE.value, tuple(_PLATFORMS.value), _QUANTIZE.value)
    target.check()  # before a checkpoint is fetched
    if flags.FLAGS["platforms"].present and target.format != "stablehlo":
        raise exporting.ExportError(f"--platforms chooses a StableHLO file's lowerings; a {target.format} file runs "
                                    "wherever its runtime does: drop --platforms")
    directory, protocol = inference.resolve(checkpoint, config)
    model_classes = read_metadata(directory)["num_classes"]
    names = inference.class_names(directory, _LABELS.value, model_classes)
    frames = _FRAMES.value or protocol.sampling.num_frames
    size = _SIZE.value or protocol.views.crop_size
    info = {"source": checkpoint, "class_names": names, "sampling_rate": protocol.sampling.rate,
            "sampling_mode": protocol.sampling.mode}
    return exporting.export(directory, out, target, frames, size, info)


def check(path: str) -> float:
    """Runs an exported file and its checkpoint on one random clip and prints the largest logit difference.

    Args:
      path: a file this command wrote.

    Returns:
      The largest absolute logit difference.
    """
    meta = runtimes.read_sidecar(path)
    run, runtime = runtimes.load(path)
    model, variables = load_directory(meta["checkpoint"], dtype=None if meta["dtype"] == "float32" else meta["dtype"])
    shape = meta["input"]["shape"]
    video = np.random.default_rng(0).integers(0, 256, (shape[0] or 2, *shape[1:]), np.uint8)
    ours = np.asarray(jax.jit(exporting.clip_function(model, variables, meta["dtype"]))(video))
    theirs = run(video)
    diff = float(np.abs(theirs - ours).max())
    agree = float(np.mean(theirs.argmax(-1) == ours.argmax(-1)))
    print(f"{path}: {meta['format']} in {runtime} against JAX on a random {tuple(video.shape)} clip: "
          f"max |Δlogit| {diff:.2e}, top-1 agreement {agree:.0%}", flush=True)
    return diff


def main(argv):
    """`python -m uniformer_jax.export CKPT OUT --format F` or `--check OUT`.

    Args:
      argv: the program name, the checkpoint and the output file.
    """
    console.quiet_logging()
    args = argv[1:]
    try:
        if _CHECK.value:
            if args:
                sys.exit("error: --check takes the exported file alone: python -m uniformer_jax.export --check OUT")
            meta = runtimes.read_sidecar(_CHECK.value)
            diff = check(_CHECK.value)
            exact = meta["dtype"] == "float32" and not meta.get("quantize")
            if exact and diff > TOLERANCE:
                sys.exit(f"error: {_CHECK.value} differs from its checkpoint by {diff:.2e} > {TOLERANCE:g}")
            return
        if len(args) != 2 or _FORMAT.value is None:
            sys.exit("error: name a checkpoint, an output file and a format: python -m uniformer_jax.export CKPT OUT "
                     "--format stablehlo|onnx|tflite")
        meta = write(args[0], args[1], _CONFIG.value)
    except (CheckpointError, ValueError) as e:  # ExportError, ExportedFileError, ConfigError: ValueErrors
        sys.exit(f"error: {e}")
    batch = meta["input"]["shape"][0] or "any"
    print(f"wrote {args[1]} ({meta['format']}, {meta['variant']}, batch {batch} x {meta['frames']} x "
          f"{meta['crop_size']}² uint8 -> {len(meta['class_names'])} logits) and {args[1]}.json", flush=True)


if __name__ == "__main__":
    app.run(main)
