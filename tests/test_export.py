"""Exported StableHLO, ONNX and LiteRT files against the JAX model, run where uniformer_jax cannot be imported."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

from tests.conftest import reference_model, sensex_state_dict
from uniformer_jax import exporting, inference
from uniformer_jax.models.layers import normalise
from uniformer_jax.models.variants import create_model
from uniformer_jax.weights.checkpoints import load_directory, save_pretrained

RUNNER = Path(__file__).with_name("exported_runner.py")
REPO = Path(__file__).resolve().parents[1]
# (checkpoint maker, frames, size): S in Sense-X's released .pth form, XXS at 4 x 128 where token pruning runs.
MODELS = {"s": 8, "xxs": 4}
SIZES = {"s": 64, "xxs": 128}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A Sense-X UniFormer-S .pth of random weights, and a converted XXS of random weights whose class-token
    attention is far from uniform (so which tokens are pruned does not hang on rounding)."""
    root = tmp_path_factory.mktemp("export")
    torch.save(sensex_state_dict(reference_model()), root / "s.pth")
    model = create_model("uniformer_xxs", num_classes=400)
    variables = model.init(jax.random.key(0), normalise(np.zeros((1, 4, 128, 128, 3), np.uint8)))
    rng = np.random.default_rng(1)
    variables = jax.tree.map(lambda a: np.asarray(a) + 0.05 * rng.standard_normal(a.shape).astype(np.float32),
                             variables)
    save_pretrained(root / "xxs", variables, {"variant": "uniformer_xxs", "num_classes": 400, "ln_eps": 1e-6})
    return root, {"s": str(root / "s.pth"), "xxs": str(root / "xxs")}


def run_outside(files: dict[str, np.ndarray], tmp: Path) -> dict[str, np.ndarray]:
    """Each exported file run on its clip by tests/exported_runner.py, in `python -I` from an empty directory."""
    args = []
    for path, clip in files.items():
        np.save(tmp / f"{Path(path).name}.npy", clip)
        args.append(f"{path}={tmp / Path(path).name}.npy")
    result = subprocess.run([sys.executable, "-I", str(RUNNER), str(tmp / "logits.npz"), *args], cwd=tmp,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = np.load(tmp / "logits.npz")
    return {path: out[Path(path).name] for path in files}


@pytest.mark.parametrize("name", ["s", "xxs"])
def test_every_format_gives_the_models_logits_outside_the_project(checkpoints, name, tmp_path):
    root, sources = checkpoints
    directory, protocol = inference.resolve(sources[name])
    frames, size = MODELS[name], SIZES[name]
    info = {"source": sources[name], "class_names": [f"c{i}" for i in range(400)], "sampling_rate": 4,
            "sampling_mode": "dense"}
    files, metas = {}, {}
    rng = np.random.default_rng(2)
    for fmt in exporting.FORMATS:
        path = str(tmp_path / f"model.{fmt}")
        metas[fmt] = exporting.export(directory, path, exporting.Target(fmt), frames, size, info)
        batch = 3 if fmt == "stablehlo" else 1  # the StableHLO program's batch is symbolic
        files[path] = rng.integers(0, 256, (batch, frames, size, size, 3), np.uint8)
    model, variables = load_directory(directory)
    step = jax.jit(exporting.clip_function(model, variables))
    for path, logits in run_outside(files, tmp_path).items():
        expected = np.asarray(step(files[path]))
        assert logits.shape == expected.shape == (files[path].shape[0], 400)
        assert np.abs(logits - expected).max() <= 1e-4, (path, np.abs(logits - expected).max())
    meta = json.loads(Path(f"{tmp_path}/model.onnx.json").read_text())
    assert meta == metas["onnx"]
    assert meta["input"] == {"name": "video", "shape": [1, frames, size, size, 3], "dtype": "uint8",
                             "layout": "BTHWC, RGB 0-255"}
    hlo = metas["stablehlo"]
    assert hlo["input"]["shape"][0] is None and hlo["platforms"] == ["cpu", "cuda", "tpu"]
    assert (meta["frames"], meta["crop_size"], meta["sampling_rate"], meta["sampling_mode"]) == (frames, size, 4,
                                                                                               "dense")
    assert meta["class_names"] == info["class_names"] and meta["output"]["shape"] == [1, 400]
    if name == "s":  # the .pth's own digest, as sha256sum gives it
        assert meta["source_sha256"] == hashlib.sha256(Path(sources["s"]).read_bytes()).hexdigest()


def test_command_exports_checks_and_refuses_in_one_line(checkpoints, tmp_path):
    source = checkpoints[1]["xxs"]
    out = tmp_path / "xxs.stablehlo"
    command = [sys.executable, "-m", "uniformer_jax.export"]
    done = subprocess.run([*command, source, str(out), "--format", "stablehlo", "--frames", "4", "--size", "128",
                           "--platforms", "cpu"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == (f"wrote {out} (stablehlo, uniformer_xxs, batch any x 4 x 128² uint8 -> 400 logits) "
                                   f"and {out}.json"), done.stdout
    checked = subprocess.run([*command, "--check", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert checked.returncode == 0, checked.stderr[-3000:]
    diff = float(checked.stdout.split("max |Δlogit| ")[1].split(",")[0])
    assert diff <= 1e-4 and "top-1 agreement 100%" in checked.stdout, checked.stdout
    for flags, says in ((["--format", "onnx", "--dtype", "bfloat16"], "float32 only"),
                        (["--format", "stablehlo", "--quantize", "int8"], "use --format tflite"),
                        (["--format", "tflite", "--platforms", "cuda"], "drop --platforms")):
        refused = subprocess.run([*command, source, str(tmp_path / "x"), *flags], capture_output=True, text=True,
                                 timeout=600, cwd=REPO)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], \
            refused.stderr
        assert not (tmp_path / "x").exists()
