"""python -m uniformer_jax.extract: sliding-window features against MMAction2 applied window by window.

The reference decodes with PyAV, takes each window's frames by the rule written out here, resizes float frames
as the original's test view (bilinear short side, centre crop) and pools MMAction2's backbone output.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests import gcs_emulator
from tests.conftest import reference_model, save_mmaction2
from tests.videos import write_video
from uniformer_jax.data import synthetic, video
from uniformer_jax.weights import conversion

ROOT = Path(__file__).resolve().parents[1]
FRAMES, RATE, STRIDE, SIZE = 4, 2, 5, 32  # a window spans (4 - 1) * 2 + 1 = 7 frames
# Frame counts: windows at 0, 5, 10 ending exactly on the last frame; one frame short of that third window;
# shorter than one window.
LENGTHS = {"a/exact": 17, "a/b/short_of_one": 16, "tiny": 5}


def reference_windows(n: int) -> list[list[int]]:
    starts = [k * STRIDE for k in range(n) if k * STRIDE + (FRAMES - 1) * RATE <= n - 1] or [0]
    return [[min(s + i * RATE, n - 1) for i in range(FRAMES)] for s in starts]


def reference_features(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    model = reference_model("uniformer_small", 3)
    clips = []
    for idx in reference_windows(len(frames)):
        x = ((torch.from_numpy(frames[idx]).float() / 255 - 0.45) / 0.225).permute(0, 3, 1, 2)
        h, w = x.shape[-2:]
        size = (math.floor(h / w * SIZE), SIZE) if w < h else (SIZE, math.floor(w / h * SIZE))
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        y0, x0 = math.ceil((size[0] - SIZE) / 2), math.ceil((size[1] - SIZE) / 2)
        clips.append(x[:, :, y0:y0 + SIZE, x0:x0 + SIZE])  # (T, C, S, S)
    with torch.no_grad():
        maps = model.backbone(torch.stack(clips).permute(0, 2, 1, 3, 4).contiguous())  # (W, C, T', H', W')
    return maps.mean(dim=(2, 3, 4)).numpy()


def extract(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uniformer_jax.extract", str(root / "videos"), "--checkpoint",
                           str(root / "ckpt"), "--out", str(out), f"--frames={FRAMES}", f"--rate={RATE}",
                           f"--stride={STRIDE}", f"--size={SIZE}", "--batch=2", *extra],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """A tree of videos (and a text file named as a video), a converted 3-class checkpoint, one extraction."""
    root = tmp_path_factory.mktemp("extract")
    for name, n in LENGTHS.items():
        (root / "videos" / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / "videos" / f"{name}.mp4", n, 25, 64, 48)
    (root / "videos" / "notes.mp4").write_text("not a video\n")
    conversion.to_orbax(save_mmaction2(reference_model("uniformer_small", 3), root / "mm.pth"), root / "ckpt")
    result = extract(root, root / "out")
    return root, result


def test_features_match_mmaction2_window_by_window(extracted):
    root, result = extracted
    assert result.returncode == 1, result.stderr[-3000:]  # the text file is skipped, the rest extracted
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {root / 'videos' / 'notes.mp4'}: skipped")
    summary, rate = result.stdout.strip().splitlines()[-2:]
    assert summary.startswith(f"3 videos' features in {root / 'out'}, 1 skipped")
    assert re.fullmatch(r"6 windows extracted on this process in [\d.]+ s \([\d.]+ windows/s, compilation included\)",
                        rate), rate
    skipped = (root / "out" / "skipped.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in skipped] == [str(root / "videos" / "notes.mp4")]
    for name, n in LENGTHS.items():
        features = np.load(root / "out" / f"{name}.npy")
        described = json.loads((root / "out" / f"{name}.json").read_text())
        expected = reference_windows(n)
        assert described["num_frames"] == n and described["fps"] == 25
        assert [(w["start_frame"], w["end_frame"]) for w in described["windows"]] == [(i[0], i[-1]) for i in expected]
        assert described["windows"][0]["end_time"] == pytest.approx((expected[0][-1] + 1) / 25)
        reference = reference_features(root / "videos" / f"{name}.mp4")
        assert features.shape == reference.shape == (len(expected), 512) and features.dtype == np.float32
        # uint8 frames after the resize here, float frames in the reference: a fraction of a grey level apart
        np.testing.assert_allclose(features, reference, atol=2e-2 * np.abs(reference).max())


def test_a_run_killed_with_sigkill_resumes_to_whole_files_and_other_settings_are_refused(extracted, tmp_path):
    root, _ = extracted
    (tmp_path / "videos").mkdir()
    for i in range(24):  # the same video 24 times: every file's features must come out the same
        shutil.copy(root / "videos" / "a" / "exact.mp4", tmp_path / "videos" / f"copy{i:02d}.mp4")
    command = [sys.executable, "-m", "uniformer_jax.extract", str(tmp_path / "videos"), "--checkpoint",
               str(root / "ckpt"), "--out", str(tmp_path / "out"), f"--frames={FRAMES}", f"--rate={RATE}",
               f"--stride={STRIDE}", f"--size={SIZE}", "--batch=2", "--workers=1"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while not list((tmp_path / "out").glob("*.json"))[1:] and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # settings.json and the first video's
    proc.kill()
    proc.communicate()
    done = sorted(p.name for p in (tmp_path / "out").glob("copy*.json"))
    assert 0 < len(done) < 24, done  # killed part-way
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list((tmp_path / "out").rglob("*.partial"))
    features = [np.load(tmp_path / "out" / f"copy{i:02d}.npy") for i in range(24)]
    for f in features:
        np.testing.assert_array_equal(f, features[0])
    np.testing.assert_allclose(features[0], np.load(root / "out" / "a" / "exact.npy"), rtol=1e-5, atol=1e-5)
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")}
    other = subprocess.run([*command, "--stride=7"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert other.returncode == 1
    assert other.stderr.strip().splitlines()[-1] == (f"error: {tmp_path / 'out'} holds features of other settings "
                                                     "(stride 5); give another --out, or the same settings to resume")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")} == written


def test_two_processes_split_the_videos_into_a_bucket(extracted, tmp_path, bucket):
    """--out on gs:// (the GCS emulator): each process writes its videos' files, process 0 the merged skip list."""
    root, _ = extracted
    url, env = bucket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "uniformer_jax.extract", str(root / "videos"), "--checkpoint", str(root / "ckpt"),
         "--out", f"{url}/features", f"--frames={FRAMES}", f"--rate={RATE}", f"--stride={STRIDE}",
         f"--size={SIZE}", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [1, 1], [err[-2000:] for _, err in outs]  # notes.mp4, on one of them
    out = gcs_emulator.download(env, f"{url}/features", tmp_path / "out")
    assert (out / "skipped.tsv").read_text() == (root / "out" / "skipped.tsv").read_text()
    assert not list(out.glob(".skipped-*"))
    for name in LENGTHS:
        np.testing.assert_allclose(np.load(out / f"{name}.npy"), np.load(root / "out" / f"{name}.npy"),
                                   rtol=1e-5, atol=1e-5)
        assert json.loads((out / f"{name}.json").read_text())["windows"] == json.loads(
            (root / "out" / f"{name}.json").read_text())["windows"]


def two_halves(path: Path) -> None:
    """40 frames: 20 of a dark scene, then 20 of a bright one."""
    ramp = np.linspace(0, 60, 64, dtype=np.float32)[None, :, None]
    dark = np.broadcast_to(20 + ramp, (48, 64, 3)).astype(np.uint8)
    bright = np.broadcast_to(250 - 2 * ramp, (48, 64, 3)).astype(np.uint8)
    video.write_frames(path, np.stack([dark] * 20 + [bright] * 20), 10, synthetic.CRF)


def test_timeline_and_render_follow_the_video_window_by_window(extracted, tmp_path):
    root, _ = extracted
    two_halves(tmp_path / "halves.mp4")
    protocol = ["--config", str(ROOT / "configs/k400_s16.py"), f"--config.data.num_frames={FRAMES}",
                f"--config.data.rate={RATE}", f"--config.data.short_side={SIZE}", f"--config.data.crop_size={SIZE}",
                "--config.model.num_classes=3"]
    result = subprocess.run([sys.executable, "-m", "uniformer_jax.predict", str(tmp_path / "halves.mp4"),
                             "--checkpoint", str(root / "ckpt"), *protocol, "--timeline", "--stride=10", "--json",
                             "--render", str(tmp_path / "captioned.mp4")],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == [(0, 6), (10, 16), (20, 26), (30, 36)]
    assert [r["start_time"] for r in rows] == [0.0, 1.0, 2.0, 3.0] and rows[0]["end_time"] == pytest.approx(0.7)
    # The reference: MMAction2's softmax of each window's logits.
    with av.open(str(tmp_path / "halves.mp4")) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    model = reference_model("uniformer_small", 3)
    for row in rows:
        idx = [row["start_frame"] + i * RATE for i in range(FRAMES)]
        x = ((torch.from_numpy(frames[idx]).float() / 255 - 0.45) / 0.225).permute(0, 3, 1, 2)
        x = torch.nn.functional.interpolate(x, size=(SIZE, math.floor(64 / 48 * SIZE)), mode="bilinear",
                                            align_corners=False)
        x0 = math.ceil((x.shape[-1] - SIZE) / 2)
        clip = x[:, :, :, x0:x0 + SIZE].permute(1, 0, 2, 3)[None].contiguous()
        with torch.no_grad():
            probs = torch.softmax(model.cls_head(model.backbone(clip)), -1)[0].numpy()
        assert [p["label"] for p in row["top5"]] == [str(c) for c in np.argsort(-probs)]
        np.testing.assert_allclose([p["probability"] for p in row["top5"]], np.sort(probs)[::-1], atol=5e-3)
    assert rows[0]["top5"] != rows[2]["top5"]  # the content changed, and so did the prediction
    # The rendered copy: every frame, the caption of the window it is in (one caption a half here).
    with av.open(str(tmp_path / "captioned.mp4")) as container:
        shown = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.float32)
    assert shown.shape == (40, 48, 64, 3)
    caption = shown[:, :12, :40].mean(axis=-1)  # the top-left corner, where the caption is drawn
    assert np.abs(caption[5] - caption[15]).mean() < 3 < np.abs(caption[5] - caption[25]).mean()
