"""train.py end to end on the demo's moving-square videos: resuming after SIGTERM and kill -9, another device
layout over 2 processes, non-finite losses and refused configs. That training learns is test_demo.py's test;
that it starts from a released PyTorch checkpoint with a new head, test_finetune_guide.py's."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf

from tests import gcs_emulator
from tests.test_data import dmvr_record
from tests.videos import frame
from uniformer_jax import demo
from uniformer_jax.data.builder import build
from uniformer_jax.weights.checkpoints import load_directory

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8  # 16 videos, 1 clip each, 8 clips a batch: 2 steps an epoch
# Mixing, stochastic depth and the random augmentations on, so that resuming must restore every random stream;
# 2 input shards, so that 1 and 2 processes read the same batches.
SMALL = ["--config.train.input_shards=2", "--config.train.batch_size=8", "--config.train.reference_batch=8",
         "--config.train.mix_group=4",
         "--config.train.repeats=1", "--config.train.epochs=4", "--config.train.warmup_epochs=1",
         "--config.train.mixup=0.8", "--config.train.cutmix=1.0", "--config.train.drop_path=0.1",
         "--config.train.log_every=1", "--config.train.checkpoint_every=2", "--config.train.val_every=0"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("motion")
    demo.write_videos(root, {"train": 4, "validation": 1})
    return str(build("motion", root / "videos", {"train": root / "train.txt", "validation": root / "validation.txt"},
                     root / "tfds", classes=root / "classes.txt", short_side=32, workers=2).data_dir)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """Every run of the module shares one compilation cache: restarts then compile in seconds."""
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def command(source: str, workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), f"--config={ROOT / 'configs/motion.py'}",
            f"--config.data.source={source}", f"--config.workdir={workdir}", *SMALL, *extra]


def train(source: str, workdir: Path, env: dict, *extra: str, devices: int = 1) -> subprocess.CompletedProcess:
    if devices > 1:
        env = {**env, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    result = subprocess.run(command(source, workdir, *extra), capture_output=True, text=True, timeout=900, cwd=ROOT,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def losses(workdir: Path) -> dict[int, float]:
    """Step -> loss from metrics.jsonl."""
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return {row["step"]: row["loss"] for row in map(json.loads, lines) if "loss" in row}


def logged_steps(workdir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def tensorboard_steps(workdir: Path, tag: str = "loss") -> list[int]:
    events = [tf.compat.v1.Event.FromString(bytes(r)) for path in sorted((workdir / "tensorboard").iterdir())
              for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]
    return sorted(e.step for e in events if any(v.tag == tag for v in e.summary.value))


def params(workdir: Path) -> list[np.ndarray]:
    _, variables = load_directory(workdir / "model")
    return [np.asarray(x) for x in jax.tree.leaves(variables)]


def steps_saved(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def straight(source, env, tmp_path_factory) -> Path:
    """One uninterrupted run on 1 device."""
    workdir = tmp_path_factory.mktemp("train") / "straight"
    train(source, workdir, env)
    return workdir


def test_an_uninterrupted_run_logs_and_saves_everything(straight):
    assert sorted(losses(straight)) == list(range(1, STEPS + 1))
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "accuracy", "grad_norm", "lr", "clips_per_second"} <= set(rows[-1])
    assert steps_saved(straight) == [4, 6, 8]  # keep=3
    assert list((straight / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((straight / "config.json").read_text())["train"]["batch_size"] == 8
    assert json.loads((straight / "model" / "uniformer.json").read_text())["class_names"] == list(demo.DIRECTIONS)


def test_a_finished_run_started_again_trains_nothing_and_leaves_its_model_alone(source, env, straight):
    def written():  # config.json is written by every start; TensorBoard opens a new event file
        return {p: p.stat().st_mtime_ns for p in straight.rglob("*")
                if p.is_file() and "tensorboard" not in p.parts and p.name != "config.json"}

    before = written()
    train(source, straight, env)
    assert written() == before


def wait_until(reached, what: str, proc: subprocess.Popen) -> None:
    """Polls `reached()` while the run `proc` goes on; fails with its stderr if it ends or stalls first."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if reached():
            return
        time.sleep(0.05)
    raise AssertionError(f"the run ended or stalled before {what}: {proc.communicate()[1][-3000:]}")


def wait_for_step(workdir: Path, step: int, proc: subprocess.Popen) -> None:
    wait_until(lambda: (workdir / "metrics.jsonl").exists() and max(losses(workdir), default=0) >= step,
               f"step {step}", proc)


def committed(env: dict, workdir: str) -> list[int]:
    """The steps whose checkpoint Orbax has committed in a bucket."""
    found = (re.fullmatch(r"checkpoints/(\d+)/commit_success.txt", n) for n in gcs_emulator.names(env, workdir))
    return sorted(int(m.group(1)) for m in found if m)


def wait_for_commit(env: dict, workdir: str, after: int, proc: subprocess.Popen) -> None:
    wait_until(lambda: any(step > after for step in committed(env, workdir)), f"a checkpoint after step {after}",
               proc)


def test_a_run_in_a_bucket_stopped_by_sigterm_then_killed_resumes_to_the_same_parameters(source, env, straight,
                                                                                         bucket, tmp_path):
    """The whole work directory on gs:// (tests/gcs_emulator.py): Orbax checkpoints, metrics.jsonl, TensorBoard,
    config.json and model/; stopped by SIGTERM after the first checkpoint, run again and killed with -9 after the
    next, run to the end, and read back through the JSON API. (test_skip_corrupt_... kills a local run.)"""
    url, gcs = bucket
    workdir, env = f"{url}/train", {**env, **gcs}
    proc = subprocess.Popen(command(source, workdir), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_commit(env, workdir, 0, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    stopped = int(re.search(r"stopped by SIGTERM at step (\d+)", out).group(1))
    assert stopped < STEPS and committed(env, workdir)[-1] == stopped

    proc = subprocess.Popen(command(source, workdir), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_commit(env, workdir, stopped, proc)
    proc.kill()
    _, err = proc.communicate()
    names = gcs_emulator.names(env, workdir)
    assert "metrics.jsonl" in names and "model/uniformer.json" not in names, err[-3000:]

    result = train(source, workdir, env)
    assert re.search(r"resumed from step (\d+) \(gs://runs/train/checkpoints/\1\)", result.stdout), result.stdout
    local = gcs_emulator.download(env, workdir, tmp_path / "copy")
    assert not list((local / "checkpoints").glob("*tmp*"))
    assert logged_steps(local) == list(range(1, STEPS + 1))  # each step once, though steps ran twice
    assert losses(local) == losses(straight)
    assert tensorboard_steps(local) == list(range(1, STEPS + 1))
    assert steps_saved(local) == sorted({2, 4, 6, 8, stopped})[-3:]  # every 2 steps and at SIGTERM; keep=3
    for a, b in zip(params(local), params(straight), strict=True):
        np.testing.assert_array_equal(a, b)


def test_two_processes_of_four_devices_resume_a_one_device_checkpoint_on_the_same_curve(source, env, straight,
                                                                                        tmp_path):
    """8 devices over 2 processes with FSDP over 4 take the 1-device run's step 4 and finish it."""
    workdir = tmp_path / "two"
    shutil.copytree(straight / "checkpoints" / "4", workdir / "checkpoints" / "4")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = command(source, workdir, "--config.train.fsdp=4", f"--coordinator_address=127.0.0.1:{port}",
                   "--num_processes=2")
    four = {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    procs = [subprocess.Popen(base + [f"--process_id={i}"], cwd=ROOT, env=four, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
    expected = {k: v for k, v in losses(straight).items() if k > 4}
    found = losses(workdir)
    assert sorted(found) == sorted(expected)
    # Another layout sums in another order: the same curve and parameters within float tolerance. AdamW moves
    # a parameter by up to the learning rate (1e-3) a step, whatever its gradient, so tiny gradient differences
    # can move a parameter apart by a fraction of that: 1e-4, a tenth of one step, is allowed.
    np.testing.assert_allclose([found[k] for k in expected], list(expected.values()), rtol=2e-3)
    for a, b in zip(params(workdir), params(straight), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(source, env, straight, tmp_path):
    workdir = tmp_path / "diverged"
    step = workdir / "checkpoints" / "4"
    shutil.copytree(straight / "checkpoints" / "4", step)
    # A NaN in the head, as a too-high learning rate leaves it: the next step's loss is NaN.
    checkpointer = ocp.StandardCheckpointer()
    state = checkpointer.restore(straight / "checkpoints" / "4" / "default")
    state["params"]["head"]["bias"] = np.full_like(state["params"]["head"]["bias"], np.nan)
    shutil.rmtree(step / "default")
    checkpointer.save(step / "default", state)
    checkpointer.wait_until_finished()
    result = subprocess.run(command(source, workdir), capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the loss is nan at step 5; stopping, the last good checkpoint (step 4) is kept"), \
        result.stderr[-3000:]
    assert steps_saved(workdir) == [4] and not (workdir / "model").exists()


def test_a_dry_run_compiles_the_runs_own_step_reports_and_writes_nothing(source, env, straight, tmp_path):
    """The uninterrupted run's command with train.dry_run: its step, found in the compilation cache that run
    filled (the same program), its memory report, and no work directory."""
    workdir = tmp_path / "run"
    result = train(source, workdir, env, "--config.train.dry_run=True")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("motion train step (dry run): 1 device (cpu) on 1 host(s), global batch 8 clips")
    # UniFormer-S with a 4-class head: 21,400,400 parameters less 396 classes x (512 weights + 1 bias)
    # (the paper's Table 1; Sense-X `slowfast/models/uniformer.py`), in float32.
    assert f"parameters {4 * (21_400_400 - 396 * 513) / 2 ** 20:.1f} MiB" in lines[1]
    assert lines[2].startswith("total ") and "no memory limit known for cpu" in lines[2]
    assert len(lines) == 5 and not workdir.exists()


@pytest.mark.parametrize("override, message", [
    ("--config.model.variant=uniformer_tiny", "unknown variant 'uniformer_tiny'"),
    ("--config.train.batch_size=6", "must split into train.accumulate=1 micro-batches"),
    ("--config.data.source=/nonexistent/motion/1.0.0", "/nonexistent/motion/1.0.0"),
    ("--config.train.init=/nonexistent/ckpt", "/nonexistent/ckpt is neither a converted checkpoint directory"),
    ("--config.train.init=in1k_S", "did you mean in1k_s"),
    ("--config.model.num_classes=5", "has 4 classes and model.num_classes is 5"),
    ("--config.data.class_names=k400-sensex", "names class 0 'riding a bike', but"),
    ("--config.data.source={tmp}/old.tfrecord", "layout from before 2022-02"),
])
def test_bad_configs_fail_before_any_compute(source, tmp_path, override, message):
    workdir = tmp_path / "refused"
    with tf.io.TFRecordWriter(str(tmp_path / "old.tfrecord")) as writer:
        writer.write(dmvr_record([frame(i, 32, 32) for i in range(4)], 0, "old", one_feature_per_frame=False))
    result = subprocess.run(command(source, workdir, override.format(tmp=tmp_path)), capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.stderr[-2000:]
    assert not workdir.exists()


@pytest.fixture(scope="module")
def damaged(source, tmp_path_factory) -> tuple[str, Path, int]:
    """The dataset with 64 bytes flipped in the middle of its training shard: the directory, the shard, and the
    byte offset of the record TensorFlow's own reader refuses."""
    copy = tmp_path_factory.mktemp("damaged") / "motion"
    shutil.copytree(source, copy)
    shard = next(copy.glob("*-train.tfrecord-*"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(b ^ 0xFF for b in data[len(data) // 2:][:64])
    shard.write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError) as refused:
        list(tf.data.TFRecordDataset(str(shard)))
    return str(copy), shard, int(re.search(r"corrupted record at (\d+)", refused.value.message).group(1))


def test_a_damaged_training_shard_is_named_in_one_line(damaged, env, tmp_path):
    copy, shard, _ = damaged
    result = subprocess.run(command(copy, tmp_path / "run"), capture_output=True, text=True, timeout=600,
                            cwd=ROOT, env=env)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert last.startswith(f"error: {copy} is damaged: {shard}: corrupted record at byte ") and "--verify" in last
    assert last.endswith("--config.data.skip_corrupt=True trains past damaged records")


def skips(workdir: Path) -> list[tuple[int, str, int]]:
    rows = map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
    return [(row["step"], row["skipped"], row["offset"]) for row in rows if "skipped" in row]


def test_skip_corrupt_skips_and_logs_the_damaged_record_and_resumes_after_kill_9_exactly(damaged, env, tmp_path):
    """Each epoch skips the damaged record, logged with its file and the offset TensorFlow reports; a run killed
    after a checkpoint resumes (counting the damage its epoch holds) to the parameters of an uninterrupted run."""
    copy, shard, offset = damaged
    skip = "--config.data.skip_corrupt=True"
    whole = train(copy, tmp_path / "whole", env, skip)
    met = skips(tmp_path / "whole")
    assert len(met) >= 3 and {(file, at) for _, file, at in met} == {(str(shard), offset)}  # 4 epochs
    printed = [line for line in whole.stderr.splitlines() if line.startswith("skipped a damaged record: ")]
    assert len(printed) == len(met) and printed[0].startswith(f"skipped a damaged record: {shard} at byte {offset}")
    workdir = tmp_path / "resumed"
    proc = subprocess.Popen(command(copy, workdir, skip), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_step(workdir, 5, proc)
    proc.kill()
    proc.communicate()
    result = train(copy, workdir, env, skip)
    assert re.search(r"resumed from step [1-9]", result.stdout), result.stdout[-2000:]
    assert skips(workdir) == met  # each skip logged once, at the same step
    assert losses(workdir) == losses(tmp_path / "whole")
    for a, b in zip(params(workdir), params(tmp_path / "whole"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_work_directory_of_another_model_is_refused_and_left_alone(source, env, straight, tmp_path):
    workdir = tmp_path / "other"
    shutil.copytree(straight / "checkpoints" / "8", workdir / "checkpoints" / "8")
    result = subprocess.run(command(source, workdir, "--config.model.variant=uniformer_base"), capture_output=True,
                            text=True, timeout=600, cwd=ROOT, env=env)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot resume from") and "its own --config.workdir" in last, result.stderr[-2000:]
    assert steps_saved(workdir) == [8] and not (workdir / "config.json").exists()
