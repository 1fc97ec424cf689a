"""Videos to sharded TFRecords of JPEG frames, from list files or from folders of classes.

    python -m uniformer_jax.dataset_builder --name k400 --videos /data/k400 \\
        --train k400/train.csv --validation k400/val.csv --classes k400-sensex
    python -m uniformer_jax.dataset_builder --name mine --videos my_clips [--val_fraction 0.2 --seed 0]

writes `~/tensorflow_datasets/video_classification/k400/1.0.0` (`--out`, else $TFDS_DATA_DIR, else
~/tensorflow_datasets), which `uniformer_jax.data.sources` reads and where eval.py and train.py find a config's
dataset. List files may be Sense-X/SlowFast csv (`path,label`), MMAction2 (`path label`) or the official Kinetics
csv (`label,youtube_id,time_start,time_end,split`) or Charades' csv (Charades_v1_train.csv, with --classes
Charades_v1_classes.txt); `path,1;4` and `path 1,4` give a video several labels (a multi-label dataset, trained
with --config.data.multi_label=True). Without lists, `--videos` is `DIR/<class>/<video>` (a
stratified `--val_fraction` of each class becomes the validation split) or `DIR/train/<class>/...` beside
`DIR/val|validation|test/<class>/...`. Videos that cannot be decoded are skipped and listed, with the reason, in
`skipped-<split>.tsv` next to the records.

    python -m uniformer_jax.dataset_builder --verify k400|DIR|PATTERN [--out DATA_DIR]

reads every record of a built dataset (or of DMVR files), checks their CRCs and counts them against
`dataset_info.json`, and lists each damaged file; exit status 1 where one is.
"""

from __future__ import annotations

from uniformer_jax import console, storage

if __name__ == "__main__":
    console.quiet_startup()  # before TensorFlow loads

import sys
from pathlib import Path

import tensorflow_datasets as tfds
from absl import app, flags
from tqdm import tqdm

from uniformer_jax.data import sources, verify
from uniformer_jax.data.builder import SPLITS, build, dataset_dir

FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags, defined only when this module runs as a program."""
    flags.DEFINE_string("name", None, "dataset name, e.g. k400 (the folder under OUT/video_classification)")
    flags.DEFINE_string("videos", None, "folder holding the video files the lists name")
    for split in SPLITS:
        flags.DEFINE_string(split, None, f"list file of the {split} split")
    flags.DEFINE_string("classes", None, "class list file or short name (python -m uniformer_jax.labels); default: "
                                        "sorted label names, or the label indices")
    flags.DEFINE_string("out", None, "TFDS data directory to write into; default: $TFDS_DATA_DIR, else "
                                      "~/tensorflow_datasets")
    flags.DEFINE_integer("short_side", 320, "resize frames so the shorter side has this many pixels; 0 keeps them")
    flags.DEFINE_float("fps", None, "resample to this frame rate as ffmpeg's fps filter does by default (round=near); "
                       "default: keep the native rate")
    flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the stored frames")
    flags.DEFINE_integer("workers", None, "decoding processes; default: all cores")
    flags.DEFINE_bool("beam", False, "build through Apache Beam (pip install 'uniformer-jax[beam]')")
    flags.DEFINE_multi_string("beam_option", [], "a Beam pipeline option, e.g. --beam_option=--runner=DataflowRunner")
    flags.DEFINE_float("val_fraction", None, "without lists, for DIR/<class>/<video>: the part of each class held "
                       "out as the validation split (default 0.2; 0 holds none)")
    flags.DEFINE_integer("seed", None, "without lists, for DIR/<class>/<video>: the seed that picks the held-out "
                         "videos (default 0)")
    flags.DEFINE_string("verify", None, "check a built dataset instead of building one: its --name, its directory "
                        "or a DMVR file pattern")


def verify_dataset(target: str) -> int:
    """`--verify`: every record file of a dataset read and counted; prints what is damaged.

    Args:
      target: a dataset name (in --out or the TFDS data directory), a dataset directory or a DMVR pattern.

    Returns:
      The exit status: 0 when every file is whole, 1 where one is not.
    """
    named = dataset_dir(target, FLAGS.out)
    source = str(named) if "/" not in target and sources.is_dataset_dir(named) else target
    try:
        files = verify.record_files(source)
        with tqdm(total=len(files), desc="verify", unit="file") as bar:
            damaged = verify.check_files(files, progress=bar.update)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for damage in damaged:
        print(f"damaged: {damage}")
    print(f"{source}: {len(files) - len(damaged)} of {len(files)} record files whole"
          + (f"; rebuild the split(s) of the {len(damaged)} damaged" if damaged else ""))
    return 1 if damaged else 0


def main(argv):
    """`python -m uniformer_jax.dataset_builder`: builds the dataset, prints what was written and skipped.

    Args:
      argv: the command line after absl's flags (unused).
    """
    del argv
    console.quiet_logging()
    if not FLAGS["verbosity"].present:
        tfds.disable_progress_bar()  # its nested bars; the build shows one bar a split
    if FLAGS.verify:
        sys.exit(verify_dataset(FLAGS.verify))
    lists = {split: getattr(FLAGS, split) for split in SPLITS if getattr(FLAGS, split)}
    missing = [f"--{f}" for f in ("name", "videos") if not getattr(FLAGS, f)]
    if missing:
        sys.exit(f"error: missing {', '.join(missing)} (see --help)")
    if not Path(FLAGS.videos).is_dir():
        sys.exit(f"error: --videos {FLAGS.videos} is not a folder")
    try:
        builder = build(FLAGS.name, FLAGS.videos, lists, FLAGS.out or tfds.core.constants.get_default_data_dir(),
                        classes=FLAGS.classes,
                        short_side=FLAGS.short_side, fps=FLAGS.fps, jpeg_quality=FLAGS.jpeg_quality,
                        workers=FLAGS.workers, beam=FLAGS.beam, beam_options=FLAGS.beam_option,
                        val_fraction=FLAGS.val_fraction, seed=FLAGS.seed)
    except ValueError as e:  # BuildError, FolderError, or an unreadable class file
        sys.exit(f"error: {e}")
    print(f"dataset: {builder.data_dir}")
    for split in builder.info.splits:
        skipped = (storage.path(builder.data_dir) / f"skipped-{split}.tsv").read_text().splitlines()
        print(f"  {split}: {builder.info.splits[split].num_examples} videos written, {len(skipped)} skipped"
              + (f" (reasons in skipped-{split}.tsv)" if skipped else ""))


if __name__ == "__main__":
    define_flags()
    app.run(main)
