"""train.freeze: a linear probe and frozen stages leave their parameters and BatchNorm statistics bit-identical,
keep no optimiser state for them, and a probe's step has no backward pass through the backbone."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from uniformer_jax import freezing, mixing, training
from uniformer_jax.models import light, uniformer, uniformerv2
from uniformer_jax.weights import torch_keys as keys

SHAPE = (4, 2, 32, 32, 3)


def batch():
    rng = np.random.default_rng(0)
    return {"video": rng.integers(0, 256, SHAPE, dtype=np.uint8), "label": np.array([0, 1, 2, 0])}


def step_and_state(model, freeze: int):
    x = np.zeros(SHAPE, np.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    # Random BatchNorm statistics, so that statistics used in training mode would differ from them.
    variables["batch_stats"] = jax.tree.map(lambda a: a + np.float32(0.3), variables["batch_stats"])
    tx = optax.adamw(1e-2)
    step = training.make_train_step(model, tx, optax.constant_schedule(1e-2), mixing.Mixing(0.8, 1.0, group=4),
                                    freeze=freeze)
    return jax.jit(step), training.init_state(variables, tx, seed=0, freeze=freeze)


def changed(before: dict, after: dict) -> set[str]:
    """The top-level entries of which any leaf is not bit-identical."""
    return {k for k in before if any(not np.array_equal(a, b) for a, b in
                                     zip(jax.tree.leaves(before[k]), jax.tree.leaves(after[k]), strict=True))}


def optimiser_entries(state) -> set[str]:
    """The top-level parameter names the optimiser's state has moments for."""
    adam = next(s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda s: hasattr(s, "mu")) if hasattr(s, "mu"))
    return set(adam.mu)


def test_linear_probe_trains_the_head_alone_without_a_backward_pass_through_the_backbone():
    model = uniformer.UniFormer(depth=(1, 1, 1, 1), num_classes=3, drop_path_rate=0.1)
    step, state = step_and_state(model, freezing.BACKBONE)
    assert optimiser_entries(state) == {"head"}
    before = jax.device_get(state)
    for _ in range(2):
        state, metrics = step(state, batch())
    after = jax.device_get(state)
    assert changed(before.params, after.params) == {"head"}
    assert changed(before.batch_stats, after.batch_stats) == set()
    # XLA's count of the compiled programs: the probe's step costs one forward pass; full fine-tuning's
    # forward and backward, about three.
    full_step, full_state = step_and_state(model, 0)
    probe = step.lower(before, batch()).cost_analysis()["flops"]
    full = full_step.lower(full_state, batch()).cost_analysis()["flops"]
    forward = jax.jit(lambda v, x: model.apply(v, x)).lower(
        {"params": before.params, "batch_stats": before.batch_stats}, np.zeros(SHAPE, np.float32)).cost_analysis()
    assert probe < 1.2 * forward["flops"] and full > 2.5 * forward["flops"], (probe, forward["flops"], full)


def test_frozen_stages_stay_bit_identical_and_the_rest_learns():
    model = light.UniFormerLight(depth=(1, 1, 2, 1), num_classes=3, drop_path_rate=0.1, frozen_stages=2)
    step, state = step_and_state(model, 2)
    stages12 = {k for k in state.params if freezing.stage_of(k) <= 2}
    assert stages12 == {"patch_embed1", "patch_embed2", "blocks1_0", "blocks2_0"}
    assert optimiser_entries(state) == set(state.params) - stages12
    before = jax.device_get(state)
    state, _ = step(state, batch())
    after = jax.device_get(state)
    assert changed(before.params, after.params) == set(state.params) - stages12
    # stage 1's stem and CBlock and stage 2's CBlock keep their statistics; the final norm's move
    assert changed(before.batch_stats, after.batch_stats) == {"norm"}


def test_a_model_without_its_frozen_stages_and_bad_specs_are_refused():
    with pytest.raises(ValueError, match="frozen_stages=2"):
        step_and_state(uniformer.UniFormer(depth=(1, 1, 1, 1), num_classes=3), 2)
    assert [freezing.freeze_level(s) for s in ("none", "stages:1", "stages:3", "backbone")] == [0, 1, 3, 4]
    for spec, hint in (("stages:4", "train.freeze=backbone"), ("head", "none, backbone, stages:N")):
        with pytest.raises(ValueError, match=hint):
            freezing.freeze_level(spec)
    with pytest.raises(ValueError, match="UniFormerV2 has no stages"):
        freezing.check("stages:2", v2=True)
    with pytest.raises(ValueError, match="UniFormerV2's"):
        freezing.check("frozen", v2=False)


def test_uniformerv2_frozen_trains_what_opengvlab_trains():
    """OpenGVLab's frozen recipe (`uniformerv2.py` L88-104): no gradient for any parameter whose name contains
    conv1, class_embedding, positional_embedding, ln_pre or transformer.resblocks; the rest learns. A small
    UniFormerV2 (2 blocks of width 64 on 32x32 clips) with local MHRA, whose parameters are in the frozen blocks."""
    model = uniformerv2.UniFormerV2(patch=16, width=64, layers=2, size=32, n_layers=1, lmhra=True, num_classes=3)
    step, state = step_and_state(model, freezing.ENCODER)
    # every parameter non-zero, so that each one that learns gets a gradient (the extractors' output projections
    # start at zero, which would hold their inputs' gradients at zero)
    leaves, tree = jax.tree.flatten(state.params)
    noise = [0.05 * np.random.default_rng(i).standard_normal(p.shape, np.float32) for i, p in enumerate(leaves)]
    state = state.replace(params=jax.tree.unflatten(tree, [p + n for p, n in zip(leaves, noise, strict=True)]))
    before = jax.device_get(state)
    state, _ = step(state, batch())
    after = jax.device_get(state)
    frozen_by_opengvlab = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer.resblocks")
    names = keys.to_torch({"params": before.params})  # PyTorch's parameter names
    moved = {k for k, v in keys.to_torch({"params": after.params}).items() if not np.array_equal(v, names[k])}
    assert moved == {k for k in names if not any(f in k for f in frozen_by_opengvlab)}
    assert not any("resblocks" in k for k in moved) and any("transformer.dec" in k for k in moved)
