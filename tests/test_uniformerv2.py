"""UniFormerV2 in Flax against MMAction2's PyTorch UniFormerV2 (`mmaction/models/backbones/uniformerv2.py`, the
same network as OpenGVLab's, spec §1.7), through checkpoint files of both released forms and the converter."""

from __future__ import annotations

import collections
import copy
import functools
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import jax
import numpy as np
import optax
import pytest
import torch
from conftest import save_mmaction2, video
from flax import traverse_util

import convert.__main__ as cli
from tests.videos import write_video
from uniformer_jax import create_model, load_pretrained, mixing, training
from uniformer_jax.benchmarks import mmaction2
from uniformer_jax.models import variants
from uniformer_jax.weights import torch_keys as keys

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # max absolute logit difference in float32
KINETICS = {}
STH = dict(n_layers=8, lmhra=True, double_lmhra=True, temporal_downsample=True)



@pytest.fixture(autouse=True)
def discard_checkpoints(tmp_path):
    """B/16 and L/14 checkpoint files and directories are 0.4-1.4 GB each: removed once their test is done, so
    that the suite's temporary files stay as small as they were before UniFormerV2."""
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)

def randomise_all(model, seed: int = 0, scale: float = 0.02):
    """Every parameter random (the zero-initialised projections, `balance` and the video token too), so that a
    conversion that misplaces any of them shows; BatchNorm statistics as `randomise_batch_stats` makes them.

    Args:
      model: an MMAction2 model.
      seed: the random seed.
      scale: the standard deviation of the weights (norms' scales are 1 + that).

    Returns:
      The model, changed in place.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + scale * noise if name.endswith(("ln_1.weight", "ln_2.weight", "ln_3.weight", "ln_pre.weight",
                                                        "norm.weight")) else
                    noise if name.endswith(("class_embedding", "positional_embedding", "temporal_cls_token",
                                            "balance")) else scale * noise)
    return mmaction2.randomise_batch_stats(model, seed)


@functools.cache
def reference(variant="uniformerv2_b16", num_classes=400, frames=8, frozen=False, **architecture):
    """A random MMAction2 UniFormerV2 (cached: read, never modify). `frozen`: `balance` at -1e4, so that
    σ(balance) is 0 and the feature is the video token alone, as in OpenGVLab's frozen models."""
    torch.manual_seed(0)
    model = randomise_all(mmaction2.build_v2(variant, num_classes, frames, **architecture))
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


def converted_dir(tmp_path, checkpoint):
    assert cli.main([str(checkpoint), str(tmp_path / "converted")]) == 0
    return tmp_path / "converted"


def converted(tmp_path, checkpoint):
    return load_pretrained(converted_dir(tmp_path, checkpoint))


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


# Spec §1.8: GFLOPs per view (torch's FlopCounter halved).
GFLOPS = [
    ("uniformerv2_b16", 8, 400, KINETICS, 148.1), ("uniformerv2_b16", 16, 174, STH, 187.2),
    ("uniformerv2_b16", 32, 174, STH, 374.4), ("uniformerv2_l14", 8, 400, KINETICS, 665.6),
    ("uniformerv2_l14", 16, 400, KINETICS, 1331.2), ("uniformerv2_l14", 32, 400, KINETICS, 2662.4),
    ("uniformerv2_l14_336", 8, 400, KINETICS, 1567.0), ("uniformerv2_l14_336", 32, 400, KINETICS, 6267.8),
    ("uniformerv2_l14_336", 64, 400, KINETICS, 12535.6), ("uniformerv2_l14", 16, 174, {**STH, "n_layers": 16}, 858.2),
    ("uniformerv2_l14", 32, 174, {**STH, "n_layers": 16}, 1716.2),
]


def test_flops_match_the_spec():
    got = [round(variants.flops(v, t, num_classes=k, **a) / 1e9, 1) for v, t, k, a, _ in GFLOPS]
    assert got == [g for *_, g in GFLOPS]


class _Block(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(width, width // 64)
        self.ln_1, self.ln_2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.mlp = torch.nn.Sequential(collections.OrderedDict(
            c_fc=torch.nn.Linear(width, 4 * width), gelu=torch.nn.GELU(), c_proj=torch.nn.Linear(4 * width, width)))


class _Encoder(torch.nn.Module):
    def __init__(self, width, layers):
        super().__init__()
        self.resblocks = torch.nn.ModuleList([_Block(width) for _ in range(layers)])


class _Visual(torch.nn.Module):
    def __init__(self, width=768, layers=12, patch=16, size=224):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = torch.nn.Parameter(torch.randn(width))
        self.positional_embedding = torch.nn.Parameter(torch.randn((size // patch) ** 2 + 1, width))
        self.ln_pre, self.ln_post = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.transformer = _Encoder(width, layers)
        self.proj = torch.nn.Parameter(torch.randn(width, 512))


class _Clip(torch.nn.Module):
    """OpenAI CLIP's parameter names (openai/CLIP `clip/model.py`): the image encoder under `visual.`, and a text
    encoder whose names (`positional_embedding`, `transformer.resblocks.*`) are the image encoder's too."""

    def __init__(self):
        super().__init__()
        self.visual = _Visual()
        self.transformer = _Encoder(512, 1)
        self.positional_embedding = torch.nn.Parameter(torch.randn(77, 512))
        self.token_embedding = torch.nn.Embedding(100, 512)
        self.ln_final = torch.nn.LayerNorm(512)
        self.text_projection = torch.nn.Parameter(torch.randn(512, 512))
        self.logit_scale = torch.nn.Parameter(torch.ones([]))

    def forward(self, x):
        return x * self.logit_scale


def test_clip_initialisation_is_what_mmaction2_loads(tmp_path, monkeypatch):
    """An OpenAI TorchScript archive and an open_clip state dict become the UniFormerV2 that MMAction2's
    `_load_pretrained` makes of the same weights (visual keys, patch embedding inflated to the centre), and the
    parts CLIP lacks start as the original's constructor starts them (zero projections: identity blocks)."""
    torch.manual_seed(0)
    clip = _Clip().half()  # OpenAI ships float16 weights
    torch.jit.save(torch.jit.trace(clip, torch.ones(1, dtype=torch.half)), tmp_path / "ViT-B-16.pt")
    torch.save({"state_dict": {"module." + k: v for k, v in clip.state_dict().items()}}, tmp_path / "open_clip.pt")
    visual = {k.removeprefix("visual."): v.float() for k, v in clip.state_dict().items() if k.startswith("visual.")}

    mm = mmaction2.build_v2(num_classes=174, frames=4, **STH)
    extracted = {k: v for k, v in visual.items() if k not in ("proj", "ln_post.weight", "ln_post.bias")}
    from mmaction.models.backbones import uniformerv2 as mm_v2

    monkeypatch.setattr(mm_v2, "_load_checkpoint", lambda *_, **__: dict(extracted))
    mm.backbone._load_pretrained("ViT-B/16")
    expected = mm.backbone.state_dict()

    for name in ("ViT-B-16.pt", "open_clip.pt"):
        assert cli.main([str(tmp_path / name), str(tmp_path / name) + ".dir", "--num-classes", "174",
                         "--structure", "sth"]) == 0
        assert cli.main(["--to-torch", str(tmp_path / name) + ".dir", str(tmp_path / name) + ".pyth"]) == 0
        got = {k.removeprefix("backbone."): v for k, v in torch.load(str(tmp_path / name) + ".pyth").items()}
        for key in extracted:
            assert torch.equal(got[key], expected[key]), key
        assert got["conv1.weight"].shape == (768, 3, 3, 16, 16)
        zero = [k for k in expected if k.startswith(("transformer.temporal_cls_token", "transformer.balance"))
                or re.search(r"dec\.\d+\.(attn\.out_proj|mlp\.c_proj)\.|pos_embed\.3\.|dpe\.\d+\.bias", k)]
        assert len(zero) == 2 + 4 * 8 + 2 * 24 + 8
        for key in zero:
            assert not expected[key].any() and not got[key].any(), key


def test_a_train_step_has_mmaction2s_loss_and_gradients(tmp_path):
    """One `training.make_train_step` step (SGD at rate 1: the update is the gradient) against PyTorch's backward
    pass on the same weights and clips: the Something-Something structure, whose local MHRA normalises with batch
    statistics in training. Dropout is off in both (it is random in both)."""
    torch_model = reference(frames=4, **STH)
    model, variables = load_pretrained(converted_dir(tmp_path, save_mmaction2(torch_model, tmp_path / "mm.pth")),
                                       mlp_dropout=0.0, head_dropout=0.0)
    rng = np.random.RandomState(0)
    clips = rng.randint(0, 256, (2, 4, 224, 224, 3)).astype(np.uint8)
    labels = rng.randint(0, 400, 2).astype(np.int32)
    tx = optax.sgd(1.0)
    step = jax.jit(training.make_train_step(model, tx, optax.constant_schedule(1.0),
                                            mixing.Mixing(mixup=0.0, cutmix=0.0, smoothing=0.1, group=2)))
    state = training.init_state(variables, tx, seed=0)
    new, metrics = step(state, {"video": clips, "label": labels})
    grads = traverse_util.flatten_dict(jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), state.params,
                                                    new.params))

    trained = copy.deepcopy(torch_model).train()
    for module in trained.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    x = ((torch.from_numpy(clips).float() - 114.75) / 57.375).permute(0, 4, 1, 2, 3).contiguous()
    logits = trained.cls_head(trained.backbone(x))
    targets = torch.full((2, 400), 0.1 / 400)
    targets[torch.arange(2), torch.from_numpy(labels).long()] += 0.9
    loss = torch.sum(-targets * torch.log_softmax(logits, dim=-1), dim=-1).mean()
    loss.backward()
    assert abs(float(metrics["loss"]) - loss.item()) < 1e-4

    named = {k: p.grad.numpy() for k, p in trained.named_parameters()}
    expected = traverse_util.flatten_dict(keys.to_flax(
        {("head." + k.removeprefix("cls_head.fc_cls.")) if k.startswith("cls_head.") else k.removeprefix("backbone."):
         v for k, v in named.items()})["params"])
    assert expected.keys() == grads.keys()
    scale = max(np.abs(g).max() for g in expected.values())
    worst = max(np.abs(grads[k] - expected[k]).max() for k in expected)
    assert worst < 1e-3 * scale, f"largest gradient difference {worst:.2e} (largest gradient {scale:.2e})"


def test_extract_takes_uniformerv2s_windows_and_features(tmp_path):
    """`python -m uniformer_jax.extract` with a converted UniFormerV2: 8 frames every 8 at 224² by default, and
    each window's feature MMAction2's backbone output (the head's input) for the same frames, decoded with PyAV,
    resized as the test view (bilinear short side to 224, centre crop)."""
    torch_model = reference(frames=8)
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "long.mp4", 70, 25, 128, 96)
    directory = converted_dir(tmp_path, save_mmaction2(torch_model, tmp_path / "mm.pth"))
    result = subprocess.run([sys.executable, "-m", "uniformer_jax.extract", str(tmp_path / "videos"), "--checkpoint",
                             str(directory), "--out", str(tmp_path / "out"), "--stride=8", "--batch=2"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((tmp_path / "out" / "long.json").read_text())
    assert [info["settings"][k] for k in ("frames", "rate", "size")] == [8, 8, 224]
    assert [w["start_frame"] for w in info["windows"]] == [0, 8]  # 16 + 7 * 8 > 69: no third window

    with av.open(str(tmp_path / "videos" / "long.mp4")) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    clips = []
    for start in (0, 8):
        x = ((torch.from_numpy(frames[start:start + 57:8]).float() / 255 - 0.45) / 0.225).permute(0, 3, 1, 2)
        x = torch.nn.functional.interpolate(x, size=(224, math.floor(128 / 96 * 224)), mode="bilinear",
                                            align_corners=False)
        offset = math.ceil((x.shape[-1] - 224) / 2)
        clips.append(x[:, :, :, offset:offset + 224])
    with torch.no_grad():
        expected = torch_model.backbone(torch.stack(clips).permute(0, 2, 1, 3, 4).contiguous()).numpy()
    got = np.load(tmp_path / "out" / "long.npy")
    assert got.shape == (2, 768)
    # uint8 frames after the resize there, float frames here: a fraction of a grey level apart (as test_extract.py)
    np.testing.assert_allclose(got, expected, atol=2e-2 * np.abs(expected).max())
