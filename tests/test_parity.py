"""The Flax model, loaded through the converter, computes what MMAction2's PyTorch UniFormer computes."""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import reference_model, save_mmaction2, save_sensex, sensex_state_dict, video

import convert.__main__ as cli
from uniformer_jax import load_pretrained
from uniformer_jax.benchmarks import mmaction2

TOLERANCE = 1e-4  # max absolute logit difference in float32


def converted(tmp_path, ckpt, *args):
    assert cli.main([str(ckpt), str(tmp_path / "converted"), *args]) == 0
    return load_pretrained(tmp_path / "converted")


def assert_parity(model, variables, reference, shape, seed=0):
    x = video(shape, seed)
    expected = mmaction2.logits(reference, x)
    got = np.asarray(jax.jit(model.apply)(variables, x))
    assert got.dtype == np.float32 and got.shape == expected.shape
    diff = np.abs(got - expected).max()
    assert diff < TOLERANCE, f"max |logit difference| {diff:.2e} for input {shape}"


@pytest.mark.parametrize("shape", [(2, 8, 64, 64, 3), (1, 16, 96, 128, 3), (1, 32, 64, 64, 3)])
def test_small_mmaction2_checkpoint(tmp_path, shape):
    reference = reference_model("uniformer_small", ln_eps=1e-5)
    model, variables = converted(tmp_path, save_mmaction2(reference, tmp_path / "mm.pth"))
    assert model.ln_eps == 1e-5
    assert_parity(model, variables, reference, shape)


def test_small_sensex_checkpoint_16x224(tmp_path):
    # MMAction2's model with eps 1e-6 in its attention blocks is the Sense-X model (MMAction2
    # `mmaction/models/backbones/uniformer.py` against Sense-X `slowfast/models/uniformer.py`).
    reference = reference_model("uniformer_small", ln_eps=1e-6)
    model, variables = converted(tmp_path, save_sensex(reference, tmp_path / "sx.pth"))
    assert model.ln_eps == 1e-6
    assert_parity(model, variables, reference, (1, 16, 224, 224, 3))


def test_base_mmaction2_checkpoint(tmp_path):
    reference = reference_model("uniformer_base", ln_eps=1e-5)
    model, variables = converted(tmp_path, save_mmaction2(reference, tmp_path / "mm.pth"))
    assert model.depth == (5, 8, 20, 7)
    assert_parity(model, variables, reference, (2, 8, 64, 64, 3))


@pytest.mark.slow
def test_base_sensex_checkpoint_16x160(tmp_path):
    reference = reference_model("uniformer_base", ln_eps=1e-6)
    model, variables = converted(tmp_path, save_sensex(reference, tmp_path / "sx.pth"))
    assert_parity(model, variables, reference, (1, 16, 160, 160, 3))


def test_sensex_training_checkpoint_with_ddp_prefix(tmp_path):
    reference = reference_model("uniformer_small", ln_eps=1e-6)
    state = {f"module.{k}": v for k, v in sensex_state_dict(reference).items()}
    ckpt = tmp_path / "checkpoint_epoch_00010.pyth"
    torch.save({"epoch": 10, "model_state": state, "optimizer_state": {"state": {}, "param_groups": []},
                "scaler": {}, "cfg": "MODEL:\n  ARCH: uniformer\n"}, ckpt)
    model, variables = converted(tmp_path, ckpt)
    assert_parity(model, variables, reference, (1, 8, 64, 64, 3))


def test_bfloat16_keeps_the_top1_class(tmp_path):
    reference = reference_model("uniformer_small", ln_eps=1e-5)
    save_mmaction2(reference, tmp_path / "mm.pth")
    assert cli.main([str(tmp_path / "mm.pth"), str(tmp_path / "converted")]) == 0
    model, variables = load_pretrained(tmp_path / "converted", dtype=jnp.bfloat16)
    assert jax.tree.leaves(variables)[0].dtype == jnp.float32
    x = video((8, 8, 96, 96, 3), seed=3)
    expected = mmaction2.logits(reference, x)
    got = np.asarray(jax.jit(model.apply)(variables, x))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.argmax(-1), expected.argmax(-1))
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()


def test_stage_features_match_the_backbone(tmp_path):
    reference = reference_model("uniformer_small", ln_eps=1e-5)
    model, variables = converted(tmp_path, save_mmaction2(reference, tmp_path / "mm.pth"))
    x = video((1, 16, 64, 64, 3))
    with torch.no_grad():
        expected = reference.backbone(torch.from_numpy(x).permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1).numpy()
    feats = jax.jit(lambda v, x: model.apply(v, x, method=model.features))(variables, x)
    assert feats["stage4"].shape == (1, 8, 2, 2, 512)  # MMAction2's unit test: (1,3,16,64,64) -> (1,512,8,2,2)
    assert np.abs(np.asarray(feats["stage4"]) - expected).max() < TOLERANCE
    np.testing.assert_allclose(feats["pooled"], expected.mean(axis=(1, 2, 3)), atol=TOLERANCE)


def test_sensex_layernorm_eps_is_kept(tmp_path):
    # With unit-variance activations eps 1e-5 and 1e-6 give the same logits to ~1e-6; scaled-down patch
    # embeddings and position convs put the attention blocks' LayerNorm inputs near eps, where it shows.
    reference = copy.deepcopy(reference_model("uniformer_small", ln_eps=1e-6))
    backbone = reference.backbone
    scaled = [backbone.patch_embed3.norm, backbone.patch_embed4.norm]
    scaled += [block.pos_embed for block in [*backbone.blocks3, *backbone.blocks4]]
    with torch.no_grad():
        for module in scaled:
            module.weight.mul_(2e-3)
            module.bias.mul_(2e-3)
    ckpt = save_sensex(reference, tmp_path / "sx.pth")
    model, variables = converted(tmp_path, ckpt)
    assert_parity(model, variables, reference, (1, 8, 64, 64, 3))
    assert cli.main([str(ckpt), str(tmp_path / "mm_eps"), "--ln-eps", "1e-5"]) == 0
    model, variables = load_pretrained(tmp_path / "mm_eps")
    x = video((1, 8, 64, 64, 3))
    diff = np.abs(np.asarray(model.apply(variables, x)) - mmaction2.logits(reference, x)).max()
    assert diff > 100 * TOLERANCE, f"eps 1e-5 in place of 1e-6 changed the logits by only {diff:.1e}"
