"""Sliding-window features of long videos, one .npy and one .json a video, for temporal action localisation.

    python -m uniformer_jax.extract VIDEO_OR_DIR ... --checkpoint k400_b16 --out features/ \\
        [--frames 16] [--rate 4] [--stride 64] [--size 224] [--layer pooled] [--batch 8]

Window k takes frames `k*stride + i*rate` (i < frames) while its last frame is in the video; a video shorter than
one window gives one window whose missing frames repeat the last. Frames are resized to the short side `size` as
eval.py resizes them and centre-cropped. `<out>/<name>.npy` holds float32 (windows, C) features (`pooled`: the
head's input, 512 for UniFormer-S/B; `stage3`/`stage4`: (windows, frame groups, C), the stage's map averaged over
space); `<out>/<name>.json` each window's frames and times, the fps, frame count and settings. `<name>` is a file's
path under the folder given, without its suffix, or the stem of a file given directly.

--frames, --rate and --size default to the release's test protocol (16, 4 and 224 for k400_s16; rate 4 for
releases tested by segments), else Kinetics'; --stride to frames x rate. A rerun skips videos already written with
the same settings, so a killed run resumes; other settings into the same --out are refused. Videos that cannot be
read are listed with the reason in <out>/skipped.tsv and the exit status is 1. With --distributed, each process
takes its share of the videos onto its own devices. --out may be a bucket (`gs://...`): each file is one upload,
whole or absent, and process 0 alone writes what the processes share.
"""

from __future__ import annotations

from uniformer_jax import console

if __name__ == "__main__":
    console.quiet_startup()  # before TensorFlow loads

import sys
import time
from pathlib import Path

import jax
from absl import app, flags
from jax.experimental import multihost_utils
from tqdm import tqdm

from uniformer_jax import extraction, recipes, sharding, storage
from uniformer_jax.data.windows import Windows
from uniformer_jax.models import uniformerv2
from uniformer_jax.models.variants import is_v2
from uniformer_jax.weights import hub, releases
from uniformer_jax.weights.checkpoints import CheckpointError, load_directory, read_metadata

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "a release name, converted directory or .pth file")
_OUT = flags.DEFINE_string("out", None, "the folder the features go to, local or a bucket (gs://...)")
_FRAMES = flags.DEFINE_integer("frames", None, "frames a window (default: the release's)")
_RATE = flags.DEFINE_integer("rate", None, "source frames from one sampled frame to the next (default: the release's)")
_STRIDE = flags.DEFINE_integer("stride", None, "frames from one window's start to the next (default: frames x rate)")
_SIZE = flags.DEFINE_integer("size", None, "short side and centre crop in pixels (default: the release's)")
_LAYER = flags.DEFINE_enum("layer", "pooled", list(extraction.LAYERS), "pooled: the head's input; stage3/stage4: "
                           "the stage's map averaged over space, one row a frame group")
_BATCH = flags.DEFINE_integer("batch", 8, "windows a step on each process, rounded up to fill every local device")
_WORKERS = flags.DEFINE_integer("workers", 4, "videos decoded at the same time on each process")


def windows_of(checkpoint: str) -> Windows:
    """The windows the flags ask for, their defaults from the checkpoint's release (Kinetics' otherwise; 8
    frames every 8 at the model's size for a UniFormerV2, released or converted).

    Args:
      checkpoint: what --checkpoint names.

    Returns:
      The `Windows`.
    """
    frames, rate, size = 16, 4, 224
    release = releases.BY_NAME.get(checkpoint)
    variant = release.variant if release else None
    if variant is None and Path(checkpoint).is_dir():
        variant = read_metadata(checkpoint)["variant"]
    if variant is not None and is_v2(variant):
        # UniFormerV2 sees 8 frames of a clip; 8 every 8 spans about 2 s, as its sparse samples of a Kinetics clip
        # do; the input size is its positional table's.
        frames, rate, size = release.frames if release else 8, 8, uniformerv2.SPECS[variant].size
    elif release:
        protocol = recipes.release_protocol(checkpoint)
        frames, size = protocol["data.num_frames"], protocol["data.crop_size"]
        rate = protocol["data.rate"] if protocol["data.mode"] == "dense" else 4
    frames, rate, size = _FRAMES.value or frames, _RATE.value or rate, _SIZE.value or size
    return Windows(frames, rate, _STRIDE.value or frames * rate, size)


def merge_skipped(out: storage.Path, skipped: dict[str, str]) -> int:
    """Every process's unreadable videos in `<out>/skipped.tsv` (written by process 0), and their count."""
    lines = [f"{path}\t{' '.join(reason.split())}\n" for path, reason in sorted(skipped.items())]
    if jax.process_count() == 1:
        storage.write_whole(out / "skipped.tsv", "".join(lines))
        return len(lines)
    own = out / f".skipped-{jax.process_index()}.tsv"
    storage.write_whole(own, "".join(lines))
    multihost_utils.sync_global_devices("extract: skipped lists written")
    parts = [out / f".skipped-{i}.tsv" for i in range(jax.process_count())]
    merged = sorted(line for part in parts for line in part.read_text().splitlines(keepends=True))
    multihost_utils.sync_global_devices("extract: skipped lists read")
    if jax.process_index() == 0:
        storage.write_whole(out / "skipped.tsv", "".join(merged))
        for part in parts:
            part.unlink()
    return len(merged)


def main(argv):
    """`python -m uniformer_jax.extract VIDEO_OR_DIR ...`: exit status 1 where a video could not be read.

    Args:
      argv: the program name and the videos and folders.
    """
    console.quiet_logging()
    sharding.initialise_distributed()
    if len(argv) < 2:
        sys.exit("error: name at least one video file or folder: python -m uniformer_jax.extract VIDEO_OR_DIR ... "
                 "--checkpoint NAME --out DIR")
    missing = [f"--{f.name}" for f in (_CHECKPOINT, _OUT) if not f.value]
    if missing:
        sys.exit(f"error: missing {', '.join(missing)} (see --help)")
    out, lead = storage.path(_OUT.value), jax.process_index() == 0
    try:
        windows = windows_of(_CHECKPOINT.value)
        settings = extraction.Settings(_CHECKPOINT.value, windows, _LAYER.value)
        videos = extraction.find_videos(argv[1:])
        extraction.check_settings(out, settings)
        if lead:
            extraction.claim(out, settings)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("extract: output folder claimed")
        mine = videos[jax.process_index()::jax.process_count()]
        todo = [(path, name) for path, name in mine if not extraction.is_done(out, name, settings)]
        directory = hub.resolve(_CHECKPOINT.value, progress=lead)
        model, variables = load_directory(directory)
    except (extraction.ExtractionError, CheckpointError, ValueError) as e:
        sys.exit(f"error: {e}")
    local = jax.local_device_count()
    batch = -(-_BATCH.value // local) * local
    with tqdm(total=len(mine), initial=len(mine) - len(todo), desc="extract", unit="video", disable=not lead) as bar:
        def progress(done: int, rate: float) -> None:
            bar.n = len(mine) - len(todo) + done
            bar.set_postfix(windows_s=f"{rate:.1f}")

        started = time.perf_counter()
        skipped, windows_done = extraction.extract(todo, out, settings, model, variables, batch, _WORKERS.value,
                                                   progress)
        seconds = time.perf_counter() - started
    count = merge_skipped(out, skipped)
    for path, reason in skipped.items():
        print(f"error: {path}: skipped, {reason}", file=sys.stderr)
    if lead:
        print(f"{len(videos) - count} videos' features in {out}"
              + (f", {count} skipped (reasons in skipped.tsv)" if count else ""))
        if windows_done:
            print(f"{windows_done} windows extracted on this process in {seconds:.1f} s "
                  f"({windows_done / seconds:.2f} windows/s, compilation included)")
    sys.exit(1 if count else 0)


if __name__ == "__main__":
    sharding.define_distributed_flags()  # here, not at import: eval.py and train.py define them too
    app.run(main)
