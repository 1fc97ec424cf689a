"""eval.py and predict end to end: MMAction2 checkpoint -> convert -> TFRecords -> eval.py, against MMAction2.

The reference decodes frames independently (PIL for the stored JPEGs, PyAV for the video files), applies the
original test protocol in PyTorch (Sense-X `slowfast/datasets/kinetics.py` and `decoder.py`: offset sampling, float
frames normalised, bilinear
short-side resize, centre crop) and sums the MMAction2 model's logits over the views.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import torch
from PIL import Image
from sklearn.metrics import confusion_matrix

from tests import gcs_emulator
from tests.conftest import reference_model, save_mmaction2
from tests.test_data import CLASSES, VIDEOS, dmvr_record, make_videos
from tests.videos import write_video
from uniformer_jax import evaluation, predict
from uniformer_jax.data import pipelines
from uniformer_jax.data.builder import build
from uniformer_jax.weights import conversion

FRAMES, RATE, CLIPS, SIZE = 8, 2, 2, 64
ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = [f"--config.data.num_frames={FRAMES}", f"--config.data.rate={RATE}", f"--config.data.clips={CLIPS}",
            f"--config.data.short_side={SIZE}", f"--config.data.crop_size={SIZE}", "--config.model.num_classes=3"]


def reference_views(frames: np.ndarray) -> np.ndarray:
    length, span = len(frames), FRAMES * RATE
    delta = max(length - span, 0)
    views = []
    for start in [k * (delta // (CLIPS - 1)) for k in range(CLIPS)]:
        idx = [int(min(max(start + j * (span - 1) / (FRAMES - 1), 0), length - 1)) for j in range(FRAMES)]
        x = ((torch.from_numpy(frames[idx]).float() / 255 - 0.45) / 0.225).permute(0, 3, 1, 2)
        h, w = x.shape[-2:]
        size = (math.floor(h / w * SIZE), SIZE) if w < h else (SIZE, math.floor(w / h * SIZE))
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        y0, x0 = math.ceil((size[0] - SIZE) / 2), math.ceil((size[1] - SIZE) / 2)
        views.append(x[:, :, y0:y0 + SIZE, x0:x0 + SIZE].permute(0, 2, 3, 1).numpy())
    return np.stack(views)


def reference_logits(frames: np.ndarray) -> np.ndarray:
    """MMAction2's summed logits over the test views of decoded frames (T, H, W, 3) uint8."""
    model = reference_model("uniformer_small", 3)
    clips = torch.from_numpy(reference_views(frames)).reshape(-1, FRAMES, SIZE, SIZE, 3).permute(0, 4, 1, 2, 3)
    with torch.no_grad():
        return model.cls_head(model.backbone(clips.contiguous())).numpy().sum(axis=0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Videos, their TFRecords (validation split, all 4 readable videos) and a converted 3-class checkpoint."""
    root = tmp_path_factory.mktemp("eval")
    make_videos(root / "videos")
    (root / "val.txt").write_text("".join(f"{n} {k % 3}\n" for k, n in enumerate(VIDEOS)))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    source = build("e2e", root / "videos", {"validation": root / "val.txt"}, root / "tfds",
                   classes=root / "classes.txt", short_side=80, workers=2).data_dir
    conversion.to_orbax(save_mmaction2(reference_model("uniformer_small", 3), root / "mm.pth"), root / "ckpt",
                     labels=root / "classes.txt")
    return root, str(source)


def eval_command(root: Path, source: str, workdir: str, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "eval.py"), f"--config={ROOT / 'configs/k400_s16.py'}",
            f"--config.checkpoint={root / 'ckpt'}", f"--config.data.source={source}", *PROTOCOL,
            f"--config.workdir={workdir if str(workdir).startswith('gs://') else root / workdir}",
            *extra]  # an absolute workdir stays as it is


def run_eval(root: Path, source: str, workdir: str, *extra: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(eval_command(root, source, workdir, *extra), capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env=env)


def read_run(workdir: Path) -> tuple[list[dict], dict]:
    predictions = [json.loads(line) for line in (workdir / "predictions.jsonl").read_text().splitlines()]
    return predictions, json.loads((workdir / "eval_results.json").read_text())


@pytest.fixture(scope="module")
def one_device(setup):
    root, source = setup
    result = run_eval(root, source, "one", "--config.eval.batch_size=2")
    assert result.returncode == 0, result.stderr[-3000:]
    return read_run(root / "one")


def test_eval_matches_mmaction2_on_the_same_frames(setup, one_device):
    root, source = setup
    predictions, results = one_device
    assert sorted(p["video"] for p in predictions) == sorted(VIDEOS)  # each once
    assert [p["index"] for p in predictions] == list(range(len(VIDEOS)))  # in the stored order
    stored = tfds.builder_from_directory(source).as_dataset(
        split="validation", decoders={"video": tfds.decode.SkipDecoding()})
    frames = {ex["name"].decode(): np.stack([np.asarray(Image.open(io.BytesIO(f))) for f in ex["video"]])
              for ex in stored.as_numpy_iterator()}
    for p in predictions:
        logits = reference_logits(frames[p["video"]])
        order = np.argsort(-logits)
        assert p["label"] == CLASSES[list(VIDEOS).index(p["video"]) % 3]
        assert p["top5"] == [CLASSES[c] for c in order]
        # measured 7e-4..1.7e-3: frames are rounded to uint8 after resizing
        np.testing.assert_allclose(p["scores"], logits[order], atol=1e-2)
    correct = [p["top5"][0] == p["label"] for p in predictions]
    assert results["videos"] == len(VIDEOS) and results["top1"] == pytest.approx(100 * np.mean(correct))
    assert results["clips_per_second"] > 0
    saved = json.loads((root / "one/config.json").read_text())
    assert saved["data"]["num_frames"] == FRAMES and saved["checkpoint"] == str(root / "ckpt")
    # the most confused pairs are sklearn's confusion matrix's largest off-diagonal counts; the plots beside them
    matrix = confusion_matrix([p["label"] for p in predictions], [p["top5"][0] for p in predictions], labels=CLASSES)
    np.fill_diagonal(matrix, 0)
    assert [(c["true"], c["predicted"], c["videos"]) for c in results["most_confused"]] == sorted(
        ((CLASSES[t], CLASSES[q], int(matrix[t, q])) for t, q in zip(*np.nonzero(matrix), strict=True)),
        key=lambda c: -c[2])
    for plot in ("confusion.png", "per_class.png"):
        assert Image.open(root / "one" / plot).size[0] > 200


def assert_same_predictions(a: list[dict], b: list[dict]) -> None:
    assert [(p["video"], p["label"], p["top5"]) for p in a] == [(p["video"], p["label"], p["top5"]) for p in b]
    np.testing.assert_allclose([p["scores"] for p in a], [p["scores"] for p in b], rtol=1e-5, atol=1e-5)


def test_eight_devices_give_the_same_predictions(setup, one_device):
    root, source = setup
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = run_eval(root, source, "eight", "--config.eval.batch_size=8", env=env)  # 4 videos, 4 padding rows
    assert result.returncode == 0, result.stderr[-3000:]
    predictions, results = read_run(root / "eight")
    assert results["devices"] == 8 and results["videos"] == one_device[1]["videos"]
    assert_same_predictions(predictions, one_device[0])


def test_two_processes_give_the_same_predictions(setup, one_device):
    """Both processes take the PyTorch file: one converts it into the model cache while the other waits."""
    root, source = setup
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = eval_command(root, source, "two", "--config.eval.batch_size=2",
                           f"--config.checkpoint={root / 'mm.pth'}", f"--coordinator_address=127.0.0.1:{port}",
                           "--num_processes=2")
    procs = [subprocess.Popen(command + [f"--process_id={i}"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    predictions, results = read_run(root / "two")
    assert results["processes"] == 2 and results["videos"] == one_device[1]["videos"]
    assert_same_predictions(predictions, one_device[0])


def test_a_checkpoint_in_another_class_order_is_refused(setup, tmp_path):
    root, source = setup
    (tmp_path / "reversed.txt").write_text("\n".join(CLASSES[::-1]) + "\n")
    conversion.to_orbax(root / "mm.pth", tmp_path / "ckpt", labels=tmp_path / "reversed.txt")
    result = run_eval(root, source, "refused", f"--config.checkpoint={tmp_path / 'ckpt'}")
    assert result.returncode != 0
    assert "orders its 3 classes differently" in result.stderr and "--reorder-to" in result.stderr
    assert not (root / "refused").exists()


def dmvr_records(source: str, path: Path, order: list[str], one_feature_per_frame: bool = True) -> str:
    """The validation videos' stored JPEGs as DMVR's script writes records, classes numbered in `order`."""
    stored = tfds.builder_from_directory(source).as_dataset(
        split="validation", decoders={"video": tfds.decode.SkipDecoding()})
    path.parent.mkdir()
    with tf.io.TFRecordWriter(str(path)) as writer:
        for ex in stored.as_numpy_iterator():
            name = CLASSES[ex["label"]]
            writer.write(dmvr_record(None, order.index(name), ex["name"].decode(), one_feature_per_frame, text=name,
                                     jpegs=list(ex["video"])))
    return str(path.parent / "*.tfrecord")


def test_dmvr_records_are_evaluated_under_their_own_class_names(setup, one_device, tmp_path):
    """Records numbering the classes in another order, on a checkpoint converted into that order."""
    root, source = setup
    order = ["moon", "zebra", "apple"]
    (tmp_path / "order.txt").write_text("\n".join(order) + "\n")
    conversion.to_orbax(root / "mm.pth", tmp_path / "ckpt", labels=root / "classes.txt",
                        reorder_to=tmp_path / "order.txt")
    pattern = dmvr_records(source, tmp_path / "records" / "val-00000-of-00001.tfrecord", order)
    result = run_eval(root, pattern, tmp_path / "dmvr", f"--config.checkpoint={tmp_path / 'ckpt'}",
                      "--config.eval.batch_size=2")
    assert result.returncode == 0, result.stderr[-3000:]
    predictions, results = read_run(tmp_path / "dmvr")
    by_video = {p["video"]: p for p in one_device[0]}
    assert_same_predictions(predictions, [by_video[p["video"]] for p in predictions])
    assert results["split"] == pattern and results["source"] == pattern


# Records numbering classes in another order than the checkpoint's reach the class-order check with their names
# (test_data.py), which refuses them as it refuses a TFDS dataset in another order (above).
@pytest.mark.parametrize("case, message", [
    ("old layout", "layout from before 2022-02"),
    ("contradicting class list", "names class 0 'apple', but "),
])
def test_dmvr_records_that_cannot_be_evaluated_end_in_one_line(setup, tmp_path, case, message):
    root, source = setup
    pattern = dmvr_records(source, tmp_path / "records" / "val.tfrecord", CLASSES, case != "old layout")
    (tmp_path / "sorted.txt").write_text("\n".join(sorted(CLASSES)) + "\n")
    extra = [f"--config.data.class_names={tmp_path / 'sorted.txt'}"] if case == "contradicting class list" else []
    result = run_eval(root, pattern, tmp_path / "refused", *extra)
    assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in result.stderr
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("override, message", [
    ("--config.model.variant=uniformer_base", "holds uniformer_small with 3 classes"),
    ("--config.eval.aggregate=max", "aggregate is 'max'"),
    ("--config.data.crops=2", "crops 1 or 3"),
])
def test_configs_that_do_not_fit_are_refused(setup, override, message):
    root, source = setup
    result = run_eval(root, source, "refused", override)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_predict_matches_mmaction2_on_the_video_files(setup):
    root, _ = setup
    protocol = evaluation.Protocol(pipelines.Sampling(FRAMES, RATE), pipelines.TestViews(CLIPS, 1, SIZE, SIZE))
    paths = [str(root / "videos" / n) for n in VIDEOS]
    results = list(predict.predict(paths, str(root / "ckpt"), protocol))
    for path, result in zip(paths, results, strict=True):
        with av.open(path) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        logits = reference_logits(frames)
        order = np.argsort(-logits)
        assert result["video"] == path
        assert [p["label"] for p in result["top5"]] == [CLASSES[c] for c in order]
        probs = torch.softmax(torch.from_numpy(logits / CLIPS), 0).numpy()[order]
        np.testing.assert_allclose([p["probability"] for p in result["top5"]], probs, atol=2e-3)


def run_predict(root: Path, paths: list[Path], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "uniformer_jax.predict", *map(str, paths), f"--config={ROOT / 'configs/k400_s16.py'}",
         *PROTOCOL, f"--checkpoint={root / 'ckpt'}", *extra], capture_output=True, text=True, timeout=600, cwd=ROOT)


def bad_videos(root: Path, tmp_path: Path) -> dict[Path, str]:
    """Videos predict cannot use, and what its message says of each."""
    write_video(tmp_path / "short.mp4", FRAMES - 1)
    return {tmp_path / "missing.mp4": "no such file", root / "videos/b/text.mp4": "cannot decode",
            root / "videos/b/trunc.mp4": "", tmp_path / "short.mp4": "too short", root / "videos/a": "is a directory"}


def test_predict_reports_bad_videos_and_goes_on(setup, tmp_path):
    root, _ = setup
    good, bad = root / "videos/a/v0.mp4", bad_videos(root, tmp_path)
    result = run_predict(root, [*list(bad)[:1], good, *list(bad)[1:]])
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == str(good) and len(lines) == 4  # the good video and its 3 classes
    assert all(line.split()[-1] in CLASSES and line.split()[0].endswith("%") for line in lines[1:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(bad)
    for (path, reason), error in zip(bad.items(), errors, strict=True):
        assert str(path) in error and reason in error, error


def test_predict_json_has_one_object_a_video(setup, tmp_path):
    root, _ = setup
    good, bad = [root / "videos" / n for n in VIDEOS], bad_videos(root, tmp_path)
    result = run_predict(root, [*good, *bad], "--json")
    assert result.returncode == 1, result.stderr[-3000:]
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["video"] for o in objects] == [str(p) for p in [*good, *bad]]
    protocol = evaluation.Protocol(pipelines.Sampling(FRAMES, RATE), pipelines.TestViews(CLIPS, 1, SIZE, SIZE))
    assert objects[:len(good)] == list(predict.predict([str(p) for p in good], str(root / "ckpt"), protocol))
    for o, reason in zip(objects[len(good):], bad.values(), strict=True):
        assert set(o) == {"video", "error"} and reason in o["error"]


def damaged_copy(source: str, tmp_path: Path, damage: str) -> tuple[str, Path]:
    """A copy of the dataset with its validation shard damaged: 64 bytes flipped in the middle, or cut short."""
    copy = tmp_path / "damaged"
    shutil.copytree(source, copy)
    shard = next(copy.glob("*-validation.tfrecord-*"))
    data = bytearray(shard.read_bytes())
    middle = len(data) // 2
    if damage == "flipped":
        data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    else:
        data = data[:middle]
    shard.write_bytes(bytes(data))
    return str(copy), shard


@pytest.mark.parametrize("damage, problem", [("flipped", "corrupted record at byte "),
                                             ("truncated", "truncated record at byte ")])
def test_a_damaged_shard_is_named_and_nothing_is_written(setup, tmp_path, damage, problem):
    root, source = setup
    copy, shard = damaged_copy(source, tmp_path, damage)
    result = run_eval(root, copy, tmp_path / "results")
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and last.startswith("error: ") and "Traceback" not in result.stderr, \
        result.stderr[-2000:]
    assert f"{shard}: {problem}" in last and "--verify" in last
    assert not (tmp_path / "results").exists()
    verified = subprocess.run([sys.executable, "-m", "uniformer_jax.dataset_builder", "--verify", copy],
                              capture_output=True, text=True, timeout=300)
    assert verified.returncode == 1 and f"damaged: {shard}: {problem}" in verified.stdout, verified.stderr[-2000:]
    whole = subprocess.run([sys.executable, "-m", "uniformer_jax.dataset_builder", "--verify", source],
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0 and "1 of 1 record files whole" in whole.stdout, whole.stdout + whole.stderr


def test_a_dataset_built_into_a_bucket_is_evaluated_there(setup, one_device, bucket):
    """dataset_builder writes the records to gs://, eval.py reads them and the converted checkpoint there and
    writes its results beside them: the predictions of the local run; then a damaged copy of the shard there is
    named, with nothing written."""
    root, _ = setup
    url, env = bucket
    built = subprocess.run([sys.executable, "-m", "uniformer_jax.dataset_builder", "--name=e2e",
                            f"--videos={root / 'videos'}", f"--validation={root / 'val.txt'}",
                            f"--classes={root / 'classes.txt'}", "--short_side=80", "--workers=2",
                            f"--out={url}/tfds"], capture_output=True, text=True, timeout=600, env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    source = f"{url}/tfds/video_classification/e2e/1.0.0"
    stored = gcs_emulator.objects(env, source)
    assert "dataset_info.json" in stored and any("validation.tfrecord" in n for n in stored)
    for file in (root / "ckpt").rglob("*"):
        if file.is_file():
            gcs_emulator.upload(env, f"{url}/ckpt/{file.relative_to(root / 'ckpt')}", file.read_bytes())
    result = run_eval(root, source, f"{url}/eval", "--config.eval.batch_size=2", f"--config.checkpoint={url}/ckpt",
                      env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    written = gcs_emulator.objects(env, f"{url}/eval")
    assert set(written) == {"config.json", "predictions.jsonl", "eval_results.json", "confusion.png",
                            "per_class.png"}
    predictions = [json.loads(line) for line in written["predictions.jsonl"].decode().splitlines()]
    assert_same_predictions(predictions, one_device[0])
    results = json.loads(written["eval_results.json"])
    assert results["source"] == source and results["checkpoint"] == f"{url}/ckpt"
    # the same dataset with its shard's middle flipped, in another folder of the bucket
    damaged = f"{url}/damaged"
    for name, data in stored.items():
        if "validation.tfrecord" in name:
            shard, data = f"{damaged}/{name}", bytearray(data)
            data[len(data) // 2:len(data) // 2 + 64] = bytes(b ^ 0xFF for b in data[len(data) // 2:][:64])
        gcs_emulator.upload(env, f"{damaged}/{name}", bytes(data))
    result = run_eval(root, damaged, f"{url}/damaged-eval", env=env)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and f"{shard}: corrupted record at byte " in last, result.stderr[-2000:]
    assert gcs_emulator.objects(env, f"{url}/damaged-eval") == {}
    verified = subprocess.run([sys.executable, "-m", "uniformer_jax.dataset_builder", "--verify", damaged],
                              capture_output=True, text=True, timeout=300, env=env)
    assert verified.returncode == 1 and f"damaged: {shard}: corrupted record at byte " in verified.stdout, \
        verified.stderr[-2000:]
    pattern = f"{source}/*-validation.tfrecord-*"  # a DMVR-style pattern, globbed in the bucket
    whole = subprocess.run([sys.executable, "-m", "uniformer_jax.dataset_builder", "--verify", pattern],
                           capture_output=True, text=True, timeout=300, env=env)
    assert whole.returncode == 0 and "1 of 1 record files whole" in whole.stdout, whole.stdout + whole.stderr
