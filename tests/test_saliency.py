"""Heatmaps: Grad-CAM against the same computation on MMAction2's PyTorch UniFormer (hooks on its blocks), and
both methods on every kind of model, light models with token pruning included."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import save_mmaction2

import convert.__main__ as cli
from uniformer_jax import load_pretrained, saliency
from uniformer_jax.benchmarks import mmaction2
from uniformer_jax.models import uniformerv2, variants

SHAPE = (8, 64, 64, 3)


def torch_gradcam(reference, clip: np.ndarray, target: int | None, stage) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM as the paper defines it, on a PyTorch model: the stage's output and its gradient by hooks,
    channel weights the gradient's mean over (T, H, W), trilinear upsampling to the clip, then min-max scaled."""
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["map"] = output

    handle = stage.register_forward_hook(keep)
    x = ((torch.from_numpy(clip).float() / 255 - 0.45) / 0.225)[None].permute(0, 4, 1, 2, 3)
    logits = reference.cls_head(reference.backbone(x.contiguous()))[0]
    handle.remove()
    target = int(logits.argmax()) if target is None else target
    logits[target].backward()
    a, g = captured["map"], captured["map"].grad  # (1, C, T', H', W')
    cam = torch.relu((g.mean(dim=(2, 3, 4), keepdim=True) * a).sum(dim=1))
    cam = torch.nn.functional.interpolate(cam[None], size=clip.shape[:3], mode="trilinear", align_corners=False)[0, 0]
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    return torch.softmax(logits, -1).detach().numpy(), cam.detach().numpy()


@pytest.mark.parametrize("layer, target", [("stage3", None), ("stage2", 1)])
def test_gradcam_matches_mmaction2(tmp_path, layer, target):
    torch.manual_seed(1)
    reference = mmaction2.randomise_batch_stats(mmaction2.build("uniformer_small", 5), 1)
    assert cli.main([str(save_mmaction2(reference, tmp_path / "mm.pth")), str(tmp_path / "converted")]) == 0
    model, variables = load_pretrained(tmp_path / "converted")
    clip = np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8)
    heatmap = saliency.explain(model, variables, clip, "gradcam", target, layer)
    blocks = getattr(reference.backbone, "blocks" + layer[-1])
    probabilities, cam = torch_gradcam(reference, clip, target, blocks[-1])
    assert heatmap.target == (int(np.argmax(probabilities)) if target is None else target)
    np.testing.assert_allclose(heatmap.probabilities, probabilities, atol=1e-5)
    assert heatmap.heat.shape == SHAPE[:3]
    np.testing.assert_allclose(heatmap.heat, cam, atol=1e-4)


def v2_model():
    """A small UniFormerV2 whose global UniBlocks do something: their zero-initialised output projections (which
    would stop every gradient to the patch tokens) are randomised."""
    model = uniformerv2.UniFormerV2(width=64, layers=3, n_layers=2, size=32, num_classes=5)
    params = model.init(jax.random.key(0), jnp.zeros((1, 4, 32, 32, 3)))["params"]
    keys = iter(jax.random.split(jax.random.key(1), 64))
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: jax.random.normal(next(keys), p.shape) * 0.1 if "dec_" in str(path) else p, params)
    return model, {"params": params}


@pytest.mark.parametrize("kind", ["uniformer_small", "uniformer_xxs", "uniformerv2"])
def test_both_methods_give_a_map_of_every_frame(kind):
    if kind == "uniformerv2":
        model, variables, shape = *v2_model(), (4, 32, 32, 3)
    else:
        model = variants.create_model(kind, num_classes=5)
        shape = (4, 96, 96, 3) if kind == "uniformer_xxs" else (4, 64, 64, 3)  # XXS: pruning in stages 3 and 4
        variables = model.init(jax.random.key(0), jnp.zeros((1, *shape)))
    clip = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    for method in saliency.METHODS:
        heatmap = saliency.explain(model, variables, clip, method, target=3)
        assert heatmap.target == 3 and heatmap.heat.shape == shape[:3], method
        assert np.isfinite(heatmap.heat).all() and heatmap.heat.min() == 0 and heatmap.heat.max() == 1, method
        assert abs(heatmap.probabilities.sum() - 1) < 1e-5


def test_bad_choices_are_refused():
    model = variants.create_model("uniformer_small", num_classes=5)
    with pytest.raises(ValueError, match="stage1, stage2, stage3, stage4; got 'layer3'"):
        saliency.make_heatmap(model, "gradcam", "layer3")
    with pytest.raises(ValueError, match="for gradcam only"):
        saliency.make_heatmap(model, "attention", "stage3")
