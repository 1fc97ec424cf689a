"""The README's demo, end to end: training learns what no single frame shows, eval.py measures it, and the trained
model's heatmaps find the square."""

from __future__ import annotations

import glob
import json
import subprocess
import sys

import av
import numpy as np
import pytest

from uniformer_jax import demo, inference, saliency, visualise
from uniformer_jax.weights.checkpoints import load_directory


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo as the README runs it: its work directory and what it printed."""
    work = tmp_path_factory.mktemp("demo")
    result = subprocess.run([sys.executable, "-m", "uniformer_jax.demo", "--workdir", str(work)], capture_output=True,
                            text=True, timeout=1800, cwd=demo.REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, result.stdout


def test_demo_learns_the_direction_of_motion(demo_run):
    work, out = demo_run
    results = json.loads((work / "run" / "eval" / "eval_results.json").read_text())
    assert results["videos"] == 40 and results["top1"] >= 95.0, results
    predictions = out[out.index("5. predict"):].splitlines()
    # Each video's block: its path, then the classes by probability; the first must be its own direction.
    for video, direction in (("left_000.mp4", "left"), ("up_000.mp4", "up")):
        at = next(i for i, line in enumerate(predictions) if line.endswith(video))
        assert predictions[at + 1].split()[-1] == direction, out[-2000:]


def test_gradcam_peaks_on_the_moving_square(demo_run):
    """In most frames of the held-out videos, the heat's peak is on the square (within 3 pixels of its box; the
    square is found by its colour, 150-255 on a background under 70)."""
    work = demo_run[0]
    from configs import motion

    config = motion.get_config()
    config.data.source = str(work / "tfds/video_classification/motion/1.0.0")
    directory, protocol = inference.resolve(str(work / "run" / "model"), config)
    model, variables = load_directory(directory)
    program = saliency.make_heatmap(model, "gradcam")
    hits = []
    for path in sorted(glob.glob(str(work / "videos/validation/*.mp4"))):
        clip = visualise.centre_clip(path, protocol)
        heat = np.asarray(program(variables, clip, np.int32(-1))[2])
        for frame, square in zip(heat, clip.astype(int).sum(axis=-1) > 3 * 110, strict=True):
            ys, xs = np.nonzero(square)
            y, x = np.unravel_index(frame.argmax(), frame.shape)
            hits.append(ys.min() - 3 <= y <= ys.max() + 3 and xs.min() - 3 <= x <= xs.max() + 3)
    assert len(hits) == 40 * 8 and np.mean(hits) > 0.5, np.mean(hits)  # measured 0.72


def test_visualise_writes_the_clip_with_its_class(demo_run, tmp_path):
    work = demo_run[0]
    video = work / "videos/validation/up_000.mp4"
    common = [sys.executable, "-m", "uniformer_jax.visualise", str(video), "--config", "configs/motion.py",
              "--checkpoint", str(work / "run" / "model")]
    result = subprocess.run([*common, "--out", str(tmp_path / "up.mp4"), "--method", "attention"],
                            capture_output=True, text=True, timeout=600, cwd=demo.REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("up ") and "attention heatmap of 8 frames" in result.stdout
    with av.open(str(tmp_path / "up.mp4")) as container:  # the clip the model sees, enlarged, frame by frame
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (192, 192, 3)
    result = subprocess.run([*common, "--out", str(tmp_path / "up.png"), "--class", "sideways"],
                            capture_output=True, text=True, timeout=600, cwd=demo.REPO)
    assert result.returncode == 1 and result.stderr.startswith("error: --class 'sideways' is not one of")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["up.mp4"]
