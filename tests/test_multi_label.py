"""Multi-label data end to end: lists with several labels a video, sigmoid training, mAP as sklearn computes it.

Each video shows two independent facts, the square's colour and the way it moves, so it has two of four labels;
no single frame tells the direction.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from sklearn.metrics import average_precision_score

from tests.test_data import dmvr_record
from tests.videos import frame
from uniformer_jax import evaluation
from uniformer_jax.data import pipelines, synthetic, video
from uniformer_jax.data.builder import build

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["red", "green", "left", "right"]
COLOURS = {"red": (230, 40, 40), "green": (40, 230, 40)}


def square_clip(colour: str, direction: str, rng: np.random.Generator) -> np.ndarray:
    """synthetic.moving_square's clip with the square in `colour` (it is the only bright thing in the frame)."""
    clip = synthetic.moving_square(direction, rng).astype(np.int32)
    square = clip.min(axis=-1) >= 150
    clip[square] = np.asarray(COLOURS[colour]) + rng.integers(-20, 21, 3)
    return np.clip(clip, 0, 255).astype(np.uint8)


def write_split(root: Path, split: str, per_pair: int, rng: np.random.Generator, spaced: bool) -> Path:
    """Videos of every (colour, direction) pair and their list: `path,0;2` (csv) or `path 0,2` (MMAction2)."""
    (root / "videos" / split).mkdir(parents=True)
    lines = []
    for i in range(per_pair):
        for colour in COLOURS:
            for direction in ("left", "right"):
                path = f"{split}/{colour}_{direction}_{i:02d}.mp4"
                clip = square_clip(colour, direction, rng)
                video.write_frames(root / "videos" / path, clip, synthetic.FPS, synthetic.CRF)
                labels = (CLASSES.index(colour), CLASSES.index(direction))
                lines.append(f"{path} {labels[0]},{labels[1]}" if spaced else f"{path},{labels[0]};{labels[1]}")
    (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root / f"{split}.txt"


def test_several_labels_a_line_make_a_multi_label_dataset(tmp_path):
    (tmp_path / "videos" / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c", "sub/46GP8", "sub/N11GT", "sub/0KZ7D"):
        clip = synthetic.moving_square("left", rng)
        video.write_frames(tmp_path / "videos" / f"{name}.mp4", clip, synthetic.FPS, synthetic.CRF)
    # csv with several labels, MMAction2 with several, one label a line, a repeated label: all in one list
    (tmp_path / "train.txt").write_text("a.mp4,0;3\nb.mp4 1,2,2\nc.mp4 2\n")
    # Charades' own csv (rows as in Charades_v1_train.csv: quoted fields with commas; a video without actions)
    header = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
    (tmp_path / "val.csv").write_text(
        header + '46GP8,HR43,Kitchen,6,7,Yes,"A person cooking, then looking out.",food;stove,'
        '"A person cooks food.",c003 11.90 21.20;c001 0.00 12.60,24.83\n'
        'N11GT,0KZ7,Stairs,6,7,Yes,"One person opens a door.",door,"Opens it.",c002 0.00 5.10,10.10\n'
        '0KZ7D,HR43,Hallway,5,6,No,"Nothing happens.",,"Nothing.",,8.00\n')
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    builder = build("multi", tmp_path / "videos", {"train": tmp_path / "train.txt", "validation": tmp_path / "val.csv"},
                    tmp_path / "tfds", classes=tmp_path / "classes.txt", workers=1)
    assert builder.info.features["label"].feature.names == CLASSES
    labels = {ex["name"].decode(): sorted(ex["label"].tolist())
              for split in ("train", "validation") for ex in tfds.as_numpy(builder.as_dataset(split=split))}
    assert labels == {"a.mp4": [0, 3], "b.mp4": [1, 2], "c.mp4": [2], "sub/46GP8.mp4": [1, 3], "sub/N11GT.mp4": [2]}
    skipped = (Path(builder.data_dir) / "skipped-validation.tsv").read_text()
    assert skipped == "sub/0KZ7D.mp4\tno action is labelled in the list\n"


def test_dmvr_records_with_several_labels_give_multi_hot_labels(tmp_path):
    with tf.io.TFRecordWriter(str(tmp_path / "val.tfrecord")) as writer:
        writer.write(dmvr_record([frame(i, 64, 48) for i in range(12)], [0, 3], "a"))
        writer.write(dmvr_record([frame(i, 64, 48) for i in range(12)], 2, "b"))
    source = str(tmp_path / "val.tfrecord")
    sampling, views = pipelines.Sampling(4, 2), pipelines.TestViews(1, 1, 32, 32)
    with pytest.raises(pipelines.DataError, match="several labels: set --config.data.multi_label=True"):
        pipelines.eval_dataset(source, "validation", batch_size=4, sampling=sampling, views=views)
    batches, _, _ = pipelines.eval_dataset(source, "validation", batch_size=4, sampling=sampling, views=views,
                                           num_classes=4)
    batch = next(batches.as_numpy_iterator())
    np.testing.assert_array_equal(batch["label"], [[1, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert batch["mask"].tolist() == [True, True, False, False]


def test_average_precision_is_sklearns_with_ties():
    rng = np.random.default_rng(0)
    hot = rng.random((60, 5)) < 0.3
    scores = np.round(rng.random((60, 5)), 1)  # many tied scores
    for c in range(5):
        assert evaluation.average_precision(hot[:, c], scores[:, c]) == pytest.approx(
            average_precision_score(hot[:, c], scores[:, c]), abs=1e-12)
    assert evaluation.average_precision(np.zeros(4, bool), scores[:4, 0]) is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The colour-and-direction dataset, a UniFormer-S trained on it from random weights, and its evaluation."""
    root = tmp_path_factory.mktemp("multi_label")
    rng = np.random.default_rng(0)
    lists = {"train": write_split(root, "train", 12, rng, spaced=False),
             "validation": write_split(root, "validation", 5, rng, spaced=True)}
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    build("colour_motion", root / "videos", lists, root / "tfds", classes=root / "classes.txt", short_side=32)
    source = root / "tfds" / "video_classification" / "colour_motion" / "1.0.0"
    config = ["--config", "configs/motion.py", f"--config.data.source={source}", "--config.data.multi_label=True"]
    run = root / "run"
    subprocess.run([sys.executable, "train.py", *config, f"--config.workdir={run}", "--config.train.epochs=6",
                    "--config.train.val_every=0"], check=True, cwd=REPO)
    # No multi_label flag here: eval.py takes it from the model train.py wrote.
    subprocess.run([sys.executable, "eval.py", "--config", "configs/motion.py", f"--config.data.source={source}",
                    f"--config.checkpoint={run / 'model'}", f"--config.workdir={run / 'eval'}"], check=True, cwd=REPO)
    return root, run


def test_multi_label_training_learns_both_facts_and_map_is_sklearns(trained):
    root, run = trained
    results = json.loads((run / "eval" / "eval_results.json").read_text())
    lines = [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert results["videos"] == len(lines) == 20
    truth = np.array([[name in line["labels"] for name in CLASSES] for line in lines])
    assert (truth.sum(axis=1) == 2).all()  # a colour and a direction each
    probabilities = np.array([[line["probabilities"][name] for name in CLASSES] for line in lines])
    theirs = average_precision_score(truth, probabilities, average=None)
    np.testing.assert_allclose([results["per_class_ap"][name] for name in CLASSES], 100 * theirs, atol=1e-3)
    assert results["map"] == pytest.approx(100 * theirs.mean(), abs=1e-3)
    assert results["map"] >= 90.0, results


def test_predict_prints_each_classes_sigmoid(trained):
    """predict takes multi-label from the model and gives each class the probability eval.py scored it by."""
    root, run = trained
    video = root / "videos" / "validation" / "green_right_00.mp4"
    result = subprocess.run([sys.executable, "-m", "uniformer_jax.predict", str(video), "--config",
                             "configs/motion.py", "--checkpoint", str(run / "model"), "--json"],
                            check=True, cwd=REPO, capture_output=True, text=True)
    top = json.loads(result.stdout.splitlines()[-1])
    assert top["multi_label"] is True and top["top5"][0]["label"] == "green"
    lines = [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()]
    scored = next(line for line in lines if line["video"] == "validation/green_right_00.mp4")
    # predict decodes the mp4 with PyAV, eval.py the dataset's JPEG frames: near, not equal
    for p in top["top5"]:
        assert abs(p["probability"] - scored["probabilities"][p["label"]]) < 0.05, (top, scored)
