"""Released models by name: the registry against the paper's tables, and fetch -> verify -> convert -> cache
through UNIFORMER_JAX_MIRROR from a local HTTP server, with interrupted, corrupt and concurrent downloads."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import reference_model, save_mmaction2, save_sensex, video
from test_configs import CLASSES, RELEASED
from test_light import README as LIGHT
from test_light import original_state_dict

from tests import gcs_emulator
from uniformer_jax.benchmarks import mmaction2
from uniformer_jax.data.class_lists import read_class_names
from uniformer_jax.weights import hub, releases

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"s": "uniformer_small", "b": "uniformer_base"}
# MMAction2 `configs/recognition/uniformer/README.md`: its own K400 results of its converted checkpoints.
MMACTION2_TOP1 = {"k400_s16": 80.9, "k400_b16": 82.0, "k400_b32": 83.1}
S8 = releases.BY_NAME["k400_s8"]  # published without a hash: checked by conversion alone
S16X8 = releases.BY_NAME["k400_s16x8"]  # published with its sha256 (Hugging Face Hub)


# ---- the registry --------------------------------------------------------------------------------------------

def test_every_release_of_the_paper_is_registered():
    video_releases = [r for r in releases.RELEASES_V1 if r.form == "sensex"]
    # Sense-X README: 7 K400 and 5 K600 checkpoints (no S 32x4), SSv1/SSv2 x S/B x 16/32 x K400/K600 pre-training,
    # and the 8 lightweight K400 models.
    assert len(video_releases) == 7 + 5 + 16 + 8
    assert {r.config for r in video_releases} == set(RELEASED) | set(LIGHT)
    # ImageNet-1K: S and B, XXS at 128/160/192/224 and XS at 192/224 (image_classification/README.md).
    assert sorted(r.name for r in releases.RELEASES_V1 if r.form != "sensex") == [
        "in1k_b", "in1k_s", "in1k_xs_192", "in1k_xs_224", "in1k_xxs_128", "in1k_xxs_160", "in1k_xxs_192",
        "in1k_xxs_224", "mmaction2/k400_b16", "mmaction2/k400_b32", "mmaction2/k400_s16"]
    assert len({r.file for r in releases.RELEASES}) == len(releases.RELEASES)


@pytest.mark.parametrize("release", releases.RELEASES_V1, ids=lambda r: r.name)  # V2: test_releases_v2.py
def test_release_matches_the_papers_tables(release):
    if release.form == "imagenet":
        light = release.variant in ("uniformer_xxs", "uniformer_xs")  # published on Google Drive, without a hash
        assert release.config is None and release.classes is None
        assert (release.drive and not release.hub) if light else (release.hub and len(release.sha256) == 64)
        return
    if release.config in LIGHT:  # test_light.py checks the rest against Sense-X's README
        assert release.classes == "k400-sensex" and release.drive and release.sha256 is None
        return
    dataset, variant, frames, stride, top1 = RELEASED[release.config]
    assert (release.variant, release.frames) == (VARIANTS[variant], frames)
    assert release.rate == (stride or 1)
    if release.form == "mmaction2":
        assert release.top1 == MMACTION2_TOP1[release.config] and release.classes == "k400-mmaction2"
        assert release.file.endswith(f"-{release.sha256}.pth") and release.url.endswith(release.file)
    else:
        assert release.top1 == (top1 if stride else top1[release.name.endswith("_prek600")])
        assert release.classes == f"{dataset}-sensex" and release.drive
    assert len(read_class_names(release.classes)) == CLASSES[dataset]
    if release.hub:  # the Hub publishes the sha256 of every file it stores with Git LFS
        assert re.fullmatch("[0-9a-f]{64}", release.sha256)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_config_names_its_release_and_its_starting_point(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    release = releases.BY_NAME[config.release]
    assert release.config == name and release.top1 == config.paper.top1
    assert config.train.paper_init in releases.BY_NAME
    assert config.data.name == RELEASED[name][0]


def test_unknown_name_suggests_close_ones(tmp_path):
    with pytest.raises(hub.ZooError, match="did you mean k400_b32"):
        hub.resolve("k400-b32")


# ---- fetching from a mirror ----------------------------------------------------------------------------------

class Files(http.server.BaseHTTPRequestHandler):
    """Serves the server's folder with byte ranges (for resumed downloads), `delay` seconds per 64 KiB."""

    def do_GET(self):
        path = self.server.folder / self.path.lstrip("/")
        self.server.requests.append(self.path)
        self.server.ranges.append(self.headers.get("Range"))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        start = int(re.match(r"bytes=(\d+)-", self.headers.get("Range", "bytes=0-")).group(1))
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        try:
            for i in range(start, len(body), 1 << 16):
                self.wfile.write(body[i:i + (1 << 16)])
                time.sleep(self.server.delay)
        except ConnectionError:  # the client was killed
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A server on 127.0.0.1 serving tmp_path/mirror; the cache in tmp_path/cache."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    server.folder, server.delay, server.requests, server.ranges = folder, 0.0, [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv(hub.MIRROR_ENV, url)
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "cache"))
    yield server
    server.shutdown()
    server.server_close()


def sensex_file(folder: Path, release=S8) -> Path:
    """A Sense-X release file: the reference model (Sense-X LayerNorm eps) as a flat state dict."""
    return save_sensex(reference_model("uniformer_small", 400, 1e-6), folder / release.file)


def cached_files(tmp_path: Path) -> list[str]:
    """Every file in the cache but its lock files (empty folders hold nothing)."""
    cache = tmp_path / "cache"
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and "locks" not in p.parts)


def assert_logits_match(directory, ln_eps, order=None):
    model, variables = hub.load_pretrained(directory)
    x = video((1, 8, 64, 64, 3))
    theirs = mmaction2.logits(reference_model("uniformer_small", 400, ln_eps), x)[0]
    np.testing.assert_allclose(np.asarray(model.apply(variables, x))[0], theirs, atol=1e-4)


def test_fetch_converts_once_and_then_needs_no_network(tmp_path, mirror):
    sensex_file(mirror.folder)
    directory = hub.fetch("k400_s8")
    assert directory == tmp_path / "cache/models/k400_s8"
    metadata = json.loads((directory / "uniformer.json").read_text())
    assert metadata["class_names"] == read_class_names("k400-sensex") and metadata["release"] == "k400_s8"
    assert metadata["source_sha256"] == hashlib.sha256((mirror.folder / S8.file).read_bytes()).hexdigest()
    assert_logits_match("k400_s8", 1e-6)
    mirror.shutdown()  # no server: the cache answers
    assert hub.resolve("k400_s8") == directory and mirror.requests == [f"/{S8.file}"]
    assert hub.is_cached("k400_s8") and (tmp_path / "cache/downloads" / S8.file).is_file()


def test_published_hash_and_prefix_are_checked(tmp_path, mirror, monkeypatch):
    mm = releases.BY_NAME["mmaction2/k400_s16"]
    body = save_mmaction2(reference_model("uniformer_small"), mirror.folder / mm.file).read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    # The published prefix is the real file's; this stand-in has its own.
    monkeypatch.setitem(releases.BY_NAME, mm.name, dataclasses.replace(mm, sha256=digest[:8]))
    assert_logits_match(mm.name, 1e-5)
    assert hub.load_pretrained(mm.name)[0].num_classes == 400
    assert json.loads((hub.fetch(mm.name) / "uniformer.json").read_text())["class_names"][:2] == [
        "abseiling", "air drumming"]


RESOLVE = """import json, sys
import jax, numpy as np
if len(sys.argv) > 3:
    jax.distributed.initialize(f"127.0.0.1:{sys.argv[3]}", 2, int(sys.argv[4]))
from uniformer_jax.weights import hub
for checkpoint in sys.argv[2].split(","):
    directory = hub.resolve(checkpoint, progress=False)
    model, variables = hub.load_pretrained(directory)
    print(directory)
    print(json.dumps(np.asarray(model.apply(variables, np.load(sys.argv[1])))[0].tolist()))
"""


def test_a_bucket_cache_is_written_by_process_0_behind_a_pointer(tmp_path, bucket):
    """Two jax.distributed processes resolve a release into a gs:// cache from a gs:// mirror: process 0 alone
    converts, the other waits and loads the copy `CURRENT` names; later runs load it without the mirror and
    ignore a copy no pointer names; a .pth file in the bucket converts into that cache too."""
    url, env = bucket
    gcs_emulator.upload(env, f"{url}/zoo-mirror/{S8.file}", sensex_file(tmp_path).read_bytes())
    env = {**env, hub.CACHE_ENV: f"{url}/zoo-cache", hub.MIRROR_ENV: f"{url}/zoo-mirror"}
    x = video((1, 8, 64, 64, 3))
    np.save(tmp_path / "x.npy", x)
    theirs = mmaction2.logits(reference_model("uniformer_small", 400, 1e-6), x)[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    processes = [subprocess.Popen([sys.executable, "-c", RESOLVE, str(tmp_path / "x.npy"), "k400_s8", str(port),
                                   str(i)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-3000:] for _, err in outputs]
    models = f"{url}/zoo-cache/models/k400_s8"
    copies = {name.split("/")[0] for name in gcs_emulator.names(env, models)} - {hub.POINTER, ""}  # "": a marker
    assert len(copies) == 1  # one writer
    pointed = gcs_emulator.objects(env, models)[hub.POINTER].decode().strip()
    assert copies == {pointed}
    for out, _ in outputs:
        directory, logits = out.strip().splitlines()[-2:]
        assert directory == f"{models}/{pointed}"
        np.testing.assert_allclose(json.loads(logits), theirs, atol=1e-4)
    gcs_emulator.upload(env, f"{models}/half-written/uniformer.json", b"{")  # a copy killed before its pointer
    pth = f"{url}/zoo-mirror/{S8.file}"  # a PyTorch file in the bucket: converted through a local copy
    alone = subprocess.run([sys.executable, "-c", RESOLVE, str(tmp_path / "x.npy"), f"k400_s8,{pth}"],
                           capture_output=True, text=True, timeout=300, env={**env, hub.MIRROR_ENV: f"{url}/empty"})
    assert alone.returncode == 0, alone.stderr[-3000:]
    cached, _, converted, logits = alone.stdout.strip().splitlines()[-4:]
    assert cached == f"{models}/{pointed}" and converted.startswith(f"{url}/zoo-cache/models/files/")
    np.testing.assert_allclose(json.loads(logits), theirs, atol=1e-4)


def test_wrong_hash_is_refused_and_nothing_is_cached(tmp_path, mirror):
    sensex_file(mirror.folder, S16X8)
    with pytest.raises(hub.ZooError) as refused:
        hub.fetch("k400_s16x8")
    message = str(refused.value)
    actual = hashlib.sha256((mirror.folder / S16X8.file).read_bytes()).hexdigest()
    assert all(s in message for s in ("k400_s16x8", f"/{S16X8.file}", S16X8.sha256, actual))
    assert cached_files(tmp_path) == []


@pytest.mark.parametrize("content", [b"<!DOCTYPE html><html><body>Quota exceeded</body></html>\n", "truncated"])
def test_error_page_or_truncated_file_is_refused(tmp_path, mirror, content):
    whole = sensex_file(tmp_path).read_bytes()
    (mirror.folder / S8.file).write_bytes(whole[: len(whole) // 3] if content == "truncated" else content)
    result = subprocess.run([sys.executable, "-m", "uniformer_jax.zoo", "fetch", "k400_s8"], capture_output=True,
                            text=True, env=os.environ, timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "k400_s8" in errors[0] and f"/{S8.file}" in errors[0] and "not a usable checkpoint" in errors[0]
    assert cached_files(tmp_path) == []


def test_no_network_and_no_copy_says_where_to_put_the_file(tmp_path, mirror, monkeypatch):
    mirror.shutdown()
    mirror.server_close()  # nothing listens on that port now
    with pytest.raises(hub.ZooError, match=f"put {S8.file} into a directory and set UNIFORMER_JAX_MIRROR"):
        hub.fetch("k400_s8")
    assert not hub.is_cached("k400_s8")
    from huggingface_hub import constants

    monkeypatch.delenv(hub.MIRROR_ENV)
    # A Hub release with the Hub client offline (HF_HUB_OFFLINE=1, read when it is imported) and its cache empty.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(hub.ZooError, match="cannot download k400_b32 from hf://Sense-X/uniformer_video/"
                                           "uniformer_base_k400_32x4.pth: .*put uniformer_base_k400_32x4.pth"):
        hub.fetch("k400_b32")


def test_mirror_directory_and_pth_paths(tmp_path, mirror, monkeypatch):
    folder = tmp_path / "offline"
    folder.mkdir()
    sensex_file(folder)
    monkeypatch.setenv(hub.MIRROR_ENV, str(folder))
    assert hub.fetch("k400_s8").name == "k400_s8" and mirror.requests == []
    assert (folder / S8.file).is_file()  # the mirror's copy is read where it is, never moved
    pth = save_sensex(reference_model("uniformer_small", 400, 1e-6), tmp_path / "mine.pth")
    converted = hub.resolve(pth)  # a .pth file converts through the cache, keyed by its sha256
    assert converted.parent.name == "files" and hub.resolve(pth) == converted
    assert_logits_match(pth, 1e-6)  # form and eps detected: Sense-X keys, eps 1e-6
    with pytest.raises(hub.ZooError, match="neither a converted checkpoint directory nor a PyTorch"):
        hub.resolve(tmp_path / "nothing-here")


def fetch_process(*names) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "uniformer_jax.zoo", "fetch", *names], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ)


def test_killed_download_resumes(tmp_path, mirror):
    sensex_file(mirror.folder)
    mirror.delay = 0.02  # about 3 MB/s: the kill lands mid-download
    process = fetch_process("k400_s8")
    incoming = tmp_path / "cache/downloads/.incoming"
    deadline = time.time() + 120
    while time.time() < deadline and sum(p.stat().st_size for p in incoming.glob("*.part")) < 1 << 20:
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    part = next(incoming.glob("*.part")).stat().st_size
    assert 0 < part < (mirror.folder / S8.file).stat().st_size
    assert not hub.is_cached("k400_s8") and not (tmp_path / "cache/downloads" / S8.file).exists()
    mirror.delay = 0.0
    done = subprocess.run([sys.executable, "-m", "uniformer_jax.zoo", "fetch", "k400_s8"], capture_output=True,
                          text=True, env=os.environ, timeout=300)
    assert done.returncode == 0, done.stderr
    assert mirror.ranges[-1] == f"bytes={part}-"  # resumed where the killed one stopped
    assert not list(incoming.iterdir())
    assert_logits_match("k400_s8", 1e-6)


def test_concurrent_fetches_make_one_copy(tmp_path, mirror):
    sensex_file(mirror.folder)
    mirror.delay = 0.002
    first, second = fetch_process("k400_s8"), fetch_process("k400_s8")
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == second.returncode == 0, outputs
    assert {out.strip() for out, _ in outputs} == {str(tmp_path / "cache/models/k400_s8")}
    assert mirror.requests == [f"/{S8.file}"]  # the second waited for the first and used its copy
    assert sorted(p.name for p in (tmp_path / "cache/models").iterdir()) == ["k400_s8"]
    assert_logits_match("k400_s8", 1e-6)


def test_zoo_list(tmp_path, mirror):
    result = subprocess.run([sys.executable, "-m", "uniformer_jax.zoo", "list", "--json"], capture_output=True,
                            text=True, env=os.environ, timeout=120)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["name"] for r in rows] == [r.name for r in releases.RELEASES] and not any(r["cached"] for r in rows)
    unknown = subprocess.run([sys.executable, "-m", "uniformer_jax.zoo", "fetch", "k400_b31"], capture_output=True,
                             text=True, env=os.environ, timeout=120)
    assert unknown.returncode == 2 and unknown.stderr.strip().splitlines()[-1].startswith("error: no released model")


# ---- eval.py with nothing but the config ---------------------------------------------------------------------

def test_eval_needs_nothing_but_the_config(tmp_path, mirror, monkeypatch):
    """A mirror holding the release file and a dataset built with the builder's defaults: no other flag. The
    smallest release (UniFormer-XXS, 4 frames at 128^2, one view), from random weights of the original's shapes."""
    from tests.videos import write_video

    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    release = releases.BY_NAME["k400_xxs4_128"]
    torch.save(original_state_dict(release.variant), mirror.folder / release.file)
    work = tmp_path / "work"
    work.mkdir()
    evaluate = [sys.executable, str(ROOT / "eval.py"), "--config", str(ROOT / "configs/k400_xxs4_128.py")]
    missing = subprocess.run(evaluate, cwd=work, capture_output=True, text=True, env=os.environ, timeout=300)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr, missing.stderr
    assert missing.stderr.strip().splitlines()[-1] == (
        f"error: no dataset 'k400' in {tmp_path / 'tfds'}: build it with `python -m uniformer_jax.dataset_builder "
        "--name k400 --videos DIR --validation LIST --classes k400-sensex`, or set --config.data.source")
    assert list(work.iterdir()) == []
    (tmp_path / "videos").mkdir()
    for i, frames in enumerate((30, 70)):
        write_video(tmp_path / f"videos/v{i}.mp4", frames, width=96, height=72)
    (tmp_path / "val.txt").write_text("v0.mp4 0\nv1.mp4 341\n")  # Sense-X indices: riding a bike, abseiling
    build = subprocess.run([sys.executable, "-m", "uniformer_jax.dataset_builder", "--name", "k400", "--videos",
                            str(tmp_path / "videos"), "--validation", str(tmp_path / "val.txt"), "--classes",
                            "k400-sensex"], cwd=work, capture_output=True, text=True, env=os.environ, timeout=300)
    assert build.returncode == 0, build.stderr
    result = subprocess.run(evaluate, cwd=work, capture_output=True, text=True, env=os.environ, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((work / "runs/k400_xxs4_128/eval_results.json").read_text())
    assert (results["videos"], results["checkpoint"], results["paper_top1"]) == (2, "k400_xxs4_128", 63.2)
    assert results["source"] == str(tmp_path / "tfds/video_classification/k400/1.0.0")
    assert (results["clips"], results["crops"]) == (1, 1)
    predictions = [json.loads(line)
                   for line in (work / "runs/k400_xxs4_128/predictions.jsonl").read_text().splitlines()]
    assert {p["video"]: p["label"] for p in predictions} == {"v0.mp4": "riding a bike", "v1.mp4": "abseiling"}
    assert hub.is_cached("k400_xxs4_128")
    predicted = subprocess.run([sys.executable, "-m", "uniformer_jax.predict", str(tmp_path / "videos/v0.mp4"),
                                "--config", str(ROOT / "configs/k400_xxs4_128.py"), "--json"], cwd=work,
                               capture_output=True, text=True, env=os.environ, timeout=600)  # the config's release
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    top5 = [p["label"] for p in json.loads(predicted.stdout)["top5"]]
    assert set(top5) <= set(read_class_names("k400-sensex")) and len(top5) == 5
    noise = r"oneDNN|InitializeLog|deprecat|Downloading and preparing|cpu_feature_guard"
    # Library start-up noise comes only with --verbosity.
    for output in (build.stdout, build.stderr, result.stdout, result.stderr, predicted.stderr):
        assert not re.search(noise, output, re.IGNORECASE), output


def test_without_pytorch_nothing_is_downloaded(tmp_path, mirror, monkeypatch):
    sensex_file(mirror.folder)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails, as in an install without the extra
    with pytest.raises(hub.ZooError, match=r"needs PyTorch: pip install -c constraints.txt -e '\.\[torch\]'"):
        hub.fetch("k400_s8")
    assert mirror.requests == [] and cached_files(tmp_path) == []
