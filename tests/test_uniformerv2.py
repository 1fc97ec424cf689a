"""UniFormerV2 in Flax against MMAction2's PyTorch UniFormerV2 (`mmaction/models/backbones/uniformerv2.py`, the
same network as OpenGVLab's, spec §1.7), through checkpoint files of both released forms and the converter."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import torch
from conftest import save_mmaction2, video

import convert.__main__ as cli
from uniformer_jax import create_model, load_pretrained
from uniformer_jax.benchmarks import mmaction2

TOLERANCE = 1e-4  # max absolute logit difference in float32
KINETICS = {}
STH = dict(n_layers=8, lmhra=True, double_lmhra=True, temporal_downsample=True)


@functools.cache
def reference(variant="uniformerv2_b16", num_classes=400, frames=8, frozen=False, **architecture):
    """A random MMAction2 UniFormerV2 (cached: read, never modify). `frozen`: `balance` at -1e4, so that
    σ(balance) is 0 and the feature is the video token alone, as in OpenGVLab's frozen models."""
    torch.manual_seed(0)
    model = mmaction2.randomise(mmaction2.build_v2(variant, num_classes, frames, **architecture))
    if frozen:
        with torch.no_grad():
            model.backbone.transformer.balance.fill_(-1e4)
    return model


def save_opengvlab(model, path, frozen=False):
    """A released OpenGVLab `.pyth`: flat, `backbone.` keys, the head as `transformer.proj.{0,2}` (spec §2.3)."""
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace("backbone.transformer.norm.", "backbone.transformer.proj.0.")
        key = key.replace("cls_head.fc_cls.", "backbone.transformer.proj.2.")
        if not (frozen and key.endswith("transformer.balance")):
            state[key] = value
    torch.save(state, path)
    return path


def converted(tmp_path, checkpoint):
    assert cli.main([str(checkpoint), str(tmp_path / "converted")]) == 0
    return load_pretrained(tmp_path / "converted")


def assert_parity(model, variables, torch_model, shape):
    x = video(shape)
    expected = mmaction2.logits(torch_model, x)
    got = np.asarray(jax.jit(model.apply)(variables, x))
    assert got.shape == expected.shape
    diff = np.abs(got - expected).max()
    assert diff < TOLERANCE, f"max |logit difference| {diff:.2e} for input {shape}"


@pytest.mark.parametrize("form, architecture, frames", [("mmaction2", KINETICS, 2), ("opengvlab", STH, 4)])
def test_b16_matches_mmaction2_through_both_forms(tmp_path, form, architecture, frames):
    torch_model = reference(frames=frames, **architecture)
    if form == "mmaction2":
        checkpoint = save_mmaction2(torch_model, tmp_path / "mm.pth")
    else:
        checkpoint = save_opengvlab(torch_model, tmp_path / "og.pyth")
    model, variables = converted(tmp_path, checkpoint)
    assert (model.width, model.layers, model.n_layers, model.lmhra, model.temporal_downsample) == \
        (768, 12, architecture.get("n_layers", 4), bool(architecture), bool(architecture))
    assert_parity(model, variables, torch_model, (1, frames, 224, 224, 3))


def test_frozen_model_has_no_balance(tmp_path):
    torch_model = reference(frames=2, frozen=True)
    model, variables = converted(tmp_path, save_opengvlab(torch_model, tmp_path / "frozen.pyth", frozen=True))
    assert model.frozen and "balance" not in variables["params"]["transformer"]
    assert_parity(model, variables, torch_model, (1, 2, 224, 224, 3))


def test_l14_matches_mmaction2(tmp_path):
    torch_model = reference("uniformerv2_l14", frames=2)
    model, variables = converted(tmp_path, save_mmaction2(torch_model, tmp_path / "l14.pth"))
    assert (model.patch, model.width, model.layers) == (14, 1024, 24)
    assert_parity(model, variables, torch_model, (1, 2, 224, 224, 3))


def test_round_trip_to_opengvlab_is_bit_exact(tmp_path):
    torch_model = reference(frames=4, **STH)
    source = save_opengvlab(torch_model, tmp_path / "og.pyth")
    assert cli.main([str(source), str(tmp_path / "dir")]) == 0
    assert cli.main(["--to-torch", str(tmp_path / "dir"), str(tmp_path / "back.pyth")]) == 0
    before, after = torch.load(source), torch.load(tmp_path / "back.pyth")
    assert sorted(before) == sorted(after)
    for key, value in before.items():
        if key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(value, after[key]), key


# Spec §1.8, counted from OpenGVLab's model (parameters, BatchNorm statistics excluded).
COUNTS = [
    ("uniformerv2_b16", 400, KINETICS, 114_552_208),
    ("uniformerv2_b16", 174, STH, 162_992_814),
    ("uniformerv2_l14", 400, KINETICS, 354_099_600),
    ("uniformerv2_l14_336", 400, KINETICS, 354_427_280),
    ("uniformerv2_l14_336", 400, {"frozen": True}, 354_426_256),
    ("uniformerv2_l14", 174, {**STH, "n_layers": 16}, 573_949_966),
]


@pytest.mark.parametrize("variant, classes, architecture, count", COUNTS)
def test_parameter_counts_match_the_spec(variant, classes, architecture, count):
    model = create_model(variant, num_classes=classes, **architecture)
    size = model.size
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 2, size, size, 3), np.float32))
    assert sum(np.prod(x.shape) for x in jax.tree.leaves(shapes["params"])) == count
