"""`pip install .` (not editable) gives a package that works from any directory, without the checkout.

The wheel is built from the checkout and installed into a fresh venv. Its dependencies are the
test environment's, reached through a `.pth` path line (paths so added are not site directories, so the
environment's editable install of the checkout stays inactive): the package itself can only come from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from videos import write_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of what the build reads (no build/ or egg-info left in the checkout)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "uniformer_jax", source / "uniformer_jax", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(source)], check=True)
    (path,) = out.glob("uniformer_jax-*.whl")
    return path


@pytest.fixture(scope="module")
def python(wheel, tmp_path_factory) -> Path:
    """The python of a fresh venv with the wheel installed."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def test_wheel_holds_the_package_alone(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"uniformer_jax", wheel.name.split("-py3")[0] + ".dist-info"}
    assert "uniformer_jax/py.typed" in names
    assert "uniformer_jax/data/label_maps/k400_sensex.tsv" in names
    assert not any("/tests/" in name or name.startswith(("configs/", "convert/")) for name in names)


def run(python: Path, *args, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(python), *map(str, args)], cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


MAKE_CHECKPOINT = """
import sys
import jax, jax.numpy as jnp
import uniformer_jax
from uniformer_jax import create_model, load_pretrained, save_pretrained

model = create_model("uniformer_small", num_classes=4)
variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 32, 32, 3)))
save_pretrained(sys.argv[1], variables, {"variant": "uniformer_small", "num_classes": 4, "ln_eps": 1e-6,
                                          "class_names": ["left", "right", "up", "down"]})
loaded, restored = load_pretrained(sys.argv[1])
print(uniformer_jax.__file__)
print(loaded.apply(restored, jnp.zeros((1, 8, 32, 32, 3))).shape)
"""


def test_installed_wheel_works_outside_the_checkout(python, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    assert "k400_b32" in run(python, "-m", "uniformer_jax.zoo", "list", cwd=work)

    where, shape = run(python, "-c", MAKE_CHECKPOINT, tmp_path / "ck", cwd=work).splitlines()[-2:]
    assert Path(where).is_relative_to(python.parents[1]) and shape == "(1, 4)"

    # A config file of the user's own, outside any checkout, built from the package's recipes.
    config = work / "my_config.py"
    config.write_text((REPO / "configs" / "motion.py").read_text())
    videos = work / "videos"
    (videos / "a").mkdir(parents=True)
    for i in range(2):
        write_video(videos / "a" / f"{i}.mp4", 20, width=48, height=40)
    out = json.loads(run(python, "-m", "uniformer_jax.predict", videos / "a" / "0.mp4", "--checkpoint",
                         tmp_path / "ck", "--config", config, "--json", cwd=work))
    assert len(out["top5"]) == 4 and out["top5"][0]["label"] in ("left", "right", "up", "down")

    (work / "train.csv").write_text("a/0.mp4,0\na/1.mp4,0\n")
    built = run(python, "-m", "uniformer_jax.dataset_builder", "--name", "tiny", "--videos", videos, "--train",
                work / "train.csv", "--out", tmp_path / "tfds", "--short_side", "32", cwd=work)
    assert "2 videos written, 0 skipped" in built

    report = json.loads(run(python, "-m", "uniformer_jax.aot", "--config", config, "--topology", "v5e:2x2",
                            "--step", "eval", "--json", cwd=work))
    assert report["fits"] and report["chips"] == 4
