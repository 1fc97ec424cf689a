"""UniFormer-XXS/XS against Sense-X's own code and figures.

The golden fixtures in tests/fixtures/light were made by make.py there, which runs Sense-X's
`uniformer_light_ls_fp32.py` / `uniformer_light_fp32.py` on small random-weight models (layer scale on and off,
pruning in both stages): their checkpoints, input, eval and training-mode logits and each pruning block's token
order; `full_size.json` holds the state-dict shapes and parameter counts of the full-size models.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
import torch
from flax import traverse_util

from tests.videos import write_video
from uniformer_jax import evaluation, mixing, predict, training
from uniformer_jax.models import light, variants
from uniformer_jax.models.layers import normalise
from uniformer_jax.weights import hub, releases
from uniformer_jax.weights import torch_keys as keys
from uniformer_jax.weights.checkpoints import abstract_variables, load_directory
from uniformer_jax.weights.torch_files import load_torch_file, read_state_dict

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "light"
NOTES = json.loads((FIXTURES / "README.json").read_text())
FULL_SIZE = json.loads((FIXTURES / "full_size.json").read_text())
LAYER_SCALE = {"xxs_ls": 0.1, "xs": None}
# Sense-X video_classification/README.md: (variant, frames, crop) -> (GFLOPs, top-1); views 1 x 1.
README = {"k400_xxs4_128": ("xxs", 4, 128, 1.0, 63.2), "k400_xxs4_160": ("xxs", 4, 160, 1.6, 65.8),
          "k400_xxs8_128": ("xxs", 8, 128, 2.0, 68.3), "k400_xxs8_160": ("xxs", 8, 160, 3.3, 71.4),
          "k400_xxs16_128": ("xxs", 16, 128, 4.2, 73.3), "k400_xxs16_160": ("xxs", 16, 160, 6.9, 75.1),
          "k400_xxs32_160": ("xxs", 32, 160, 15.4, 77.9), "k400_xs32_192": ("xs", 32, 192, 34.2, 78.6)}
# exp_light/*/config.yaml MODEL_NAME: Uniformer_light_ls_fp32 (INIT_VALUE 0.1) for these three, no layer scale else.
LAYER_SCALED = {"k400_xxs4_128", "k400_xxs4_160", "k400_xxs8_128"}


def small_model(name: str) -> light.UniFormerLight:
    n = NOTES[name]
    return light.UniFormerLight(depth=tuple(n["depth"]), embed_dim=tuple(n["embed_dim"]), head_dim=n["head_dim"],
                                layer_scale=LAYER_SCALE[name], num_classes=n["num_classes"])


def fixture(name: str):
    """The small model, its variables read from the original's checkpoint as the converter reads it, and data."""
    state_dict, form = read_state_dict(load_torch_file(str(FIXTURES / f"{name}.pth")))
    assert form == "sensex"
    return small_model(name), keys.to_flax(state_dict), np.load(FIXTURES / f"{name}.npz")


def shapes(tree) -> dict:
    return {k: v.shape for k, v in traverse_util.flatten_dict(tree, sep="/").items()
            if not k.endswith("num_batches_tracked")}


def orders(intermediates) -> list[np.ndarray]:
    """Each pruning block's token order, in block order."""
    sown = {k: v for k, v in traverse_util.flatten_dict(intermediates).items() if k[-1] == "order"}
    block = {path: tuple(map(int, path[0].removeprefix("blocks").split("_"))) for path in sown}
    return [np.asarray(sown[path][0]) for path in sorted(sown, key=block.get)]


@pytest.mark.parametrize("name", ["xxs_ls", "xs"])
def test_eval_logits_and_pruned_tokens_match_the_original(name):
    model, variables, data = fixture(name)
    assert shapes(variables) == shapes(abstract_variables(model))  # every original weight has its place
    apply = jax.jit(lambda v, x: model.apply(v, normalise(x), mutable=["intermediates"]))
    logits, sown = apply(variables, data["video"])
    np.testing.assert_allclose(logits, data["logits"], atol=1e-4, rtol=0)
    found = orders(sown["intermediates"])
    assert len(found) == NOTES[name]["pruned_blocks"]
    for i, order in enumerate(found):
        np.testing.assert_array_equal(order, data[f"order{i}"], err_msg=f"pruning block {i}")


def test_training_forward_matches_the_original():
    """Training mode (drop path off): BatchNorm on batch statistics, and the class token's second head."""
    model, variables, data = fixture("xxs_ls")
    (head, head_cls), _ = model.apply(variables, normalise(data["video"]), True, mutable=["batch_stats"])
    np.testing.assert_allclose(head, data["train_head"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(head_cls, data["train_head_cls"], atol=1e-4, rtol=0)


def test_pruning_compiles_once_for_different_videos():
    model, variables, data = fixture("xs")
    traces = []

    @jax.jit
    def apply(variables, video):
        traces.append(1)
        return model.apply(variables, normalise(video), mutable=["intermediates"])

    first = orders(apply(variables, data["video"])[1]["intermediates"])
    second = orders(apply(variables, 255 - data["video"])[1]["intermediates"])
    assert len(traces) == 1
    assert any((a != b).any() for a, b in zip(first, second, strict=True))  # other videos keep other tokens


def test_a_train_step_averages_the_losses_of_both_heads_as_the_original():
    """train_net_cls.py: loss = 0.5 * CE(head) + 0.5 * CE(head_cls), here on the original's own logits; the
    gradients through pruning are finite and reach the class token and its head."""
    model, variables, data = fixture("xxs_ls")
    labels = np.array([1, 4], np.int32)
    tx = optax.sgd(1.0)  # the update is the gradient
    step = jax.jit(training.make_train_step(model, tx, optax.constant_schedule(1.0),
                                            mixing.Mixing(mixup=0.0, cutmix=0.0, smoothing=0.0, group=2)))
    state = training.init_state(variables, tx, seed=0)
    new, metrics = step(state, {"video": data["video"], "label": labels})
    expected = np.mean([np.mean(np.log(np.exp(x).sum(-1)) - x[np.arange(2), labels])
                        for x in (data["train_head"], data["train_head_cls"])])
    assert float(metrics["loss"]) == pytest.approx(expected, abs=1e-5)
    grads = traverse_util.flatten_dict(jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), state.params,
                                                    new.params), sep="/")
    assert all(np.isfinite(g).all() for g in grads.values())
    assert np.abs(grads["cls_token"]).sum() > 0 and np.abs(grads["head_cls/kernel"]).sum() > 0


@pytest.mark.parametrize("variant", sorted(FULL_SIZE))
def test_full_size_variants_hold_the_originals_keys_shapes_and_parameters(variant):
    abstract = abstract_variables(variants.create_model(variant))
    original = {k: tuple(v) for k, v in FULL_SIZE[variant]["state_dict"].items()
                if not k.endswith("num_batches_tracked")}
    assert keys.torch_shapes(abstract) == original
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"])) == FULL_SIZE[variant]["params"]
    assert variants.variant_of(original) == variant


@pytest.mark.parametrize("name", sorted(README))
def test_config_release_and_flops_follow_sense_x(name):
    size, frames, crop, gflops, top1 = README[name]
    config = importlib.import_module(f"configs.{name}").get_config()
    variant = f"uniformer_{size}" + ("_ls" if name in LAYER_SCALED else "")
    assert (config.model.variant, config.model.num_classes, config.data.num_frames) == (variant, 400, frames)
    # kinetics_sparse: segment sampling, 1 clip x 1 centre crop, short side resized to the crop (TEST_CROP_SIZE).
    d = config.data
    assert (d.mode, d.clips, d.crops, d.short_side, d.crop_size) == ("segment", 1, 1, crop, crop)
    assert config.paper.top1 == top1 and config.train.dtype == "float32" and config.train.crop_size == crop
    release = releases.BY_NAME[config.release]
    assert (release.variant, release.frames, release.top1, release.config) == (variant, frames, top1, name)
    assert release.file == f"uniformer_{size}{frames}_{crop}_k400.pth" and release.drive
    assert releases.BY_NAME[config.train.paper_init].variant == f"uniformer_{size}"
    # The README's GFLOPs are rounded to 0.1; counted as fvcore counts, within 2% of them (measured 0.2-1.8%).
    assert variants.flops(variant, frames, crop) / 1e9 == pytest.approx(gflops, rel=0.02)


def original_state_dict(variant: str, num_classes: int = 400) -> dict[str, torch.Tensor]:
    """A random full-size state dict in the released (flat) form, made from the original's shapes alone."""
    generator = torch.Generator().manual_seed(0)
    state_dict = {}
    for key, shape in FULL_SIZE[variant]["state_dict"].items():
        if key.startswith("head"):
            shape = [num_classes, *shape[1:]]
        if key.endswith("num_batches_tracked"):
            state_dict[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state_dict[key] = 0.5 + torch.rand(shape, generator=generator)
        else:
            state_dict[key] = 0.05 * torch.randn(shape, generator=generator)
    return state_dict


@pytest.fixture(scope="module")
def full_size_checkpoint(tmp_path_factory):
    """A random full-size XXS-with-layer-scale release file with 3 classes."""
    path = tmp_path_factory.mktemp("light") / "uniformer_xxs4_128_k400.pth"
    state_dict = original_state_dict("uniformer_xxs_ls", num_classes=3)
    torch.save(state_dict, path)
    return path, state_dict


def test_a_full_size_checkpoint_converts_and_goes_back_bit_exact(full_size_checkpoint, tmp_path):
    path, state_dict = full_size_checkpoint
    run = [sys.executable, "-m", "convert"]
    result = subprocess.run([*run, str(path), str(tmp_path / "ck")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    model, _ = load_directory(tmp_path / "ck")
    assert isinstance(model, light.UniFormerLight) and model.layer_scale == 0.1 and model.depth == (2, 5, 8, 2)
    result = subprocess.run([*run, "--to-torch", str(tmp_path / "ck"), str(tmp_path / "back.pth")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert set(back) == set(state_dict)
    for key, value in state_dict.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(back[key], value), key


def test_predict_runs_a_light_release_config(full_size_checkpoint, tmp_path):
    """predict with the config's protocol (eval.py with nothing but this config: test_zoo.py)."""
    path, _ = full_size_checkpoint
    write_video(tmp_path / "clip.mp4", 40, 25, 96, 72)
    protocol = evaluation.Protocol.from_config(importlib.import_module("configs.k400_xxs4_128").get_config())
    assert (protocol.sampling.mode, protocol.views.crop_size, protocol.views.clips) == ("segment", 128, 1)
    [out] = predict.predict([str(tmp_path / "clip.mp4")], str(hub.resolve(str(path))), protocol)
    assert out["video"] == str(tmp_path / "clip.mp4") and len(out["top5"]) == 3  # all 3 classes, ranked
