"""Fixtures: MMAction2 reference models (the independent implementation) and checkpoint files made from them."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

from tests import gcs_emulator
from uniformer_jax.benchmarks import mmaction2
from uniformer_jax.weights import hub

# The longest modules first (a few minutes each on 2 cores). With `--dist loadfile` a module runs on one worker,
# so a long one started last would leave the other worker idle at the end (pyproject.toml turns off xdist's own
# reordering by test count).
LONGEST_FIRST = ("test_train.py", "test_demo.py", "test_eval.py", "test_data.py", "test_zoo.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: LONGEST_FIRST.index(item.path.name) if item.path.name in LONGEST_FIRST
               else len(LONGEST_FIRST))


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent JAX compilation cache for the session's programs and the commands they run: the same
    step in several eval.py or train.py runs is compiled once. (Each xdist worker has its own.)"""
    directory = str(tmp_path_factory.mktemp("jax_cache"))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
    jax.config.update("jax_compilation_cache_dir", directory)


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """Models converted by the tests (and the programs they run) go to a cache of their own, not the user's."""
    os.environ[hub.CACHE_ENV] = str(tmp_path_factory.mktemp("model_cache"))


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """A bucket on a GCS emulator (tests/gcs_emulator.py), and the environment that points clients at it."""
    with gcs_emulator.running(tmp_path_factory.mktemp("gcs")) as env:
        yield gcs_emulator.make_bucket(env, "runs"), {**os.environ, **env}


@functools.cache
def reference_model(variant: str = "uniformer_small", num_classes: int = 400, ln_eps: float = 1e-5, seed: int = 0):
    """A random-weight MMAction2 model with randomised BatchNorm statistics (cached: read, never modify)."""
    torch.manual_seed(seed)
    model = mmaction2.build(variant, num_classes, ln_eps)
    return mmaction2.randomise_batch_stats(model, seed)


def sensex_state_dict(model) -> dict[str, torch.Tensor]:
    """The Sense-X keys of an MMAction2 model's state dict (MMAction2 `mmaction/models/backbones/uniformer.py` and
    `recognizers/recognizer3d.py`)."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("cls_head.fc_cls."):
            out["head." + key.removeprefix("cls_head.fc_cls.")] = value
        else:
            out[key.removeprefix("backbone.")] = value
    return out


def save_mmaction2(model, path: Path) -> Path:
    """A checkpoint as MMAction2's runner writes one (mmengine's own functions)."""
    from mmengine.runner.checkpoint import get_state_dict, save_checkpoint, weights_to_cpu

    save_checkpoint({"meta": {"epoch": 1, "iter": 10, "seed": 0, "experiment_name": "test"},
                     "state_dict": weights_to_cpu(get_state_dict(model))}, str(path))
    return path


def save_sensex(model, path: Path) -> Path:
    """A released Sense-X checkpoint: a flat state dict."""
    torch.save(sensex_state_dict(model), path)
    return path


def video(shape, seed=0) -> np.ndarray:
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)
