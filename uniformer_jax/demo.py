"""Build a dataset, train, evaluate and predict, on videos this demo makes itself (no download).

    python -m uniformer_jax.demo [--workdir demo_work] [--per_class 24]
    python -m uniformer_jax.demo --class_folders DIR [--per_class 24]   # the videos alone, in class folders

1. writes mp4 files of a square moving left, right, up or down: no single frame tells the class;
2. builds TFRecords from them with `python -m uniformer_jax.dataset_builder`;
3. trains UniFormer-S from random weights with `train.py --config configs/motion.py`;
4. evaluates the held-out videos with `eval.py` (the paper's multi-clip protocol);
5. classifies two of the files with `python -m uniformer_jax.predict`.
Each step is the command a user runs on real data; the commands are printed as they run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from uniformer_jax.data import video
from uniformer_jax.data.synthetic import CRF, DIRECTIONS, FPS, moving_square

REPO = Path(__file__).resolve().parents[1]
HELD_OUT = 10  # validation videos of each class: enough that one miss costs 2.5% of top-1


def write_videos(root: Path, per_class: dict[str, int], seed: int = 0) -> None:
    """The demo's videos and list files.

    Writes root/videos/<split>/<class>_<i>.mp4, root/<split>.txt (`path label` lines) and root/classes.txt.

    Args:
      root: the demo's work directory.
      per_class: videos of each class by split.
      seed: the random seed.
    """
    rng = np.random.default_rng(seed)
    names = list(DIRECTIONS)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    for split, count in per_class.items():
        (root / "videos" / split).mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(count):
            for label, name in enumerate(names):
                path = Path(split) / f"{name}_{i:03d}.mp4"
                video.write_frames(root / "videos" / path, moving_square(name, rng), FPS, CRF)
                lines.append(f"{path} {label}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")


def write_class_folders(root: Path, per_class: int, seed: int = 0) -> None:
    """The demo's videos as a tree of class folders, root/<class>/<class>_<i>.mp4, the layout
    `dataset_builder --videos DIR` reads without list files.

    Args:
      root: the folder to write.
      per_class: videos of each class.
      seed: the random seed.
    """
    rng = np.random.default_rng(seed)
    for name in DIRECTIONS:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            video.write_frames(root / name / f"{name}_{i:03d}.mp4", moving_square(name, rng), FPS, CRF)


def run(*args) -> None:
    """Runs a step of the demo with this Python, in the checkout, showing the command first.

    Args:
      *args: the command line after `python`.

    Raises:
      subprocess.CalledProcessError: the step failed.
    """
    command = [sys.executable, *map(str, args)]
    print("$", " ".join(map(str, args)), flush=True)
    # TensorFlow's C++ INFO lines (oneDNN notices) would bury the steps' output.
    subprocess.run(command, check=True, cwd=REPO, env={"TF_CPP_MIN_LOG_LEVEL": "1", **os.environ})


def main(argv=None):
    """`python -m uniformer_jax.demo`: videos, dataset, training, evaluation and predictions, in a work directory.

    Args:
      argv: the command line (`--workdir`, `--per_class`, `--epochs`, `--class_folders`); None: `sys.argv`.
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="demo_work")
    parser.add_argument("--per_class", type=int, default=24, help=f"training videos per class ({HELD_OUT} more of "
                        "each are held out)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--class_folders", metavar="DIR", help="only write --per_class videos of each class to "
                        "DIR/<class>/ (a dataset to try docs/finetune.md on) and stop")
    args = parser.parse_args(argv)
    if args.class_folders:
        write_class_folders(Path(args.class_folders), args.per_class)
        print(f"{4 * args.per_class} videos in {len(DIRECTIONS)} class folders under {args.class_folders}")
        return
    work = Path(args.workdir).absolute()
    print(f"1. {4 * args.per_class} + {4 * HELD_OUT} videos of a moving square -> {work / 'videos'}", flush=True)
    write_videos(work, {"train": args.per_class, "validation": HELD_OUT})
    print("2. videos -> TFRecords", flush=True)
    run("-m", "uniformer_jax.dataset_builder", "--name", "motion", "--videos", work / "videos",
        "--train", work / "train.txt", "--validation", work / "validation.txt", "--classes", work / "classes.txt",
        "--short_side", 32, "--out", work / "tfds")
    source = work / "tfds" / "video_classification" / "motion" / "1.0.0"
    config = ["--config", "configs/motion.py", f"--config.data.source={source}"]
    run_dir = work / "run"
    print("3. train", flush=True)
    epochs = [f"--config.train.epochs={args.epochs}"] if args.epochs else []
    run("train.py", *config, f"--config.workdir={run_dir}", *epochs)
    print("4. evaluate the held-out videos", flush=True)
    run("eval.py", *config, f"--config.checkpoint={run_dir / 'model'}", f"--config.workdir={run_dir / 'eval'}")
    results = json.loads((run_dir / "eval" / "eval_results.json").read_text())
    print(f"   top-1 {results['top1']:.1f}% on {results['videos']} held-out videos", flush=True)
    print("5. predict", flush=True)
    run("-m", "uniformer_jax.predict", work / "videos/validation/left_000.mp4",
        work / "videos/validation/up_000.mp4", "--config", "configs/motion.py", "--checkpoint", run_dir / "model")


if __name__ == "__main__":
    main()
