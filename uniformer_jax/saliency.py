"""Where a model looks: Grad-CAM and attention maps over a clip, each one jitted program (forward and backward).

Grad-CAM (Selvaraju et al. 2017) weighs a feature map's channels by the class score's gradient averaged over the
map and keeps the positive part. Its map, by default:
- UniFormer and the light models: the deepest stage map with at least `MIN_SIDE` positions a side: stage 3
  (1/16 of the input, 14x14 at 224), whose gradient has passed through stage 4's global attention. Stage 4's
  7x7 is too coarse to tell an object from what surrounds it, and there Grad-CAM is only the class activation map
  (the head is linear over its mean). Small inputs fall back to shallower maps (stage 1 for the demo's 32x32).
- UniFormerV2: the patch tokens of the last block, the frames' tokens the last global UniBlock reads.
`--layer` picks any of `features`' maps (`stage1`..`stage4`, `layer1`..`layerN`).

Attention maps:
- UniFormer: attention rollout (Abnar & Zuidema 2020) of the global stages: each block's head-averaged attention
  with the residual, `(A + I) / 2`, multiplied block by block; the head pools every stage-4 token, so the relevance
  of stage 4 is the rollout's mean row, carried to the stage-3 tokens each stage-4 token merges (2x2) and through
  stage 3's rollout.
- The light models: the class token's attention score that the model itself carries from block to block to
  choose which tokens to keep (Evo-ViT), as it stands after the last block.
- UniFormerV2: the global UniBlocks' cross-attention, the video token's head-averaged attention to the patch
  tokens, averaged over the UniBlocks.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from uniformer_jax.models.layers import normalise
from uniformer_jax.models.light import UniFormerLight
from uniformer_jax.models.uniformerv2 import UniFormerV2

METHODS = ("gradcam", "attention")
MIN_SIDE = 8


@dataclasses.dataclass
class Heatmap:
    """A clip's class probabilities, the class explained and its heat `(T, H, W)` in [0, 1], frame by frame."""
    probabilities: np.ndarray
    target: int
    heat: np.ndarray
    method: str
    layer: str | None


def map_names(model) -> tuple[str, ...]:
    """The feature maps Grad-CAM can use.

    Args:
      model: a UniFormer, light UniFormer or UniFormerV2.

    Returns:
      Their names, shallow to deep.
    """
    if isinstance(model, UniFormerV2):
        return tuple(f"layer{i + 1}" for i in range(model.layers))
    return ("stage1", "stage2", "stage3", "stage4")


def default_layer(model, size: int) -> str:
    """The map Grad-CAM uses by default (see the module's docstring).

    Args:
      model: the model.
      size: the clip's height and width.

    Returns:
      A name from `map_names`.
    """
    if isinstance(model, UniFormerV2):
        return f"layer{model.layers}"
    for stage, stride in ((4, 32), (3, 16), (2, 8)):
        if size // stride >= MIN_SIDE:
            return f"stage{stage}"
    return "stage1"


def _grid(model, value, maps: dict, layer: str):
    """A map or its gradient `(1, T', H', W', C)`: V2's tokens `(B·T', 1+L, C)` without the class tokens."""
    if isinstance(model, UniFormerV2):
        t, n, c = maps[layer].shape[1:]
        side = int(np.sqrt(n - 1))
        return value.reshape(1, t, n, c)[:, :, 1:].reshape(1, t, side, side, c)
    return value


def _forward(module, video):
    """Logits and `features`' maps, in one apply."""
    maps = module.features(video)
    return module.classify(maps), maps


def _gradcam(model, variables, x, target, layer: str):
    """Logits and the Grad-CAM map at `layer` (T', H', W'), in one forward and one backward pass."""
    shapes = jax.eval_shape(lambda: model.apply(variables, x, method=_forward, mutable=["perturbations"])[1])
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["perturbations"])

    def logits_of(perturbations):
        return model.apply({**variables, "perturbations": perturbations}, x, method=_forward)

    logits, backward, maps = jax.vjp(logits_of, zeros, has_aux=True)
    target = jnp.where(target < 0, jnp.argmax(logits[0]), target)
    (grads,) = backward(jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype)[None])
    grad = next(v for k, v in traverse_util.flatten_dict(grads).items() if k[-1] == layer)
    activation = _grid(model, maps[layer], maps, layer).astype(jnp.float32)
    weights = _grid(model, grad, maps, layer).astype(jnp.float32).mean(axis=(1, 2, 3), keepdims=True)
    return logits, target, jax.nn.relu((weights * activation).sum(axis=-1))[0]


def _weights(intermediates: dict, part: str) -> list:
    """The sown attention weights of the modules whose path has `part`, in block order."""
    flat = traverse_util.flatten_dict(intermediates)
    keys = sorted((k for k in flat if k[-1] == "weights" and any(part in p for p in k)),
                  key=lambda k: [int(p.rsplit("_", 1)[1]) if p.rsplit("_", 1)[-1].isdigit() else p for p in k])
    return [flat[k][0] for k in keys]


def _rollout(weights: list) -> jnp.ndarray:
    """The product of the blocks' `(A + I) / 2` (rows renormalised), first block rightmost: `(B, N, N)`."""
    n = weights[0].shape[-1]
    rolled = jnp.eye(n, dtype=jnp.float32)
    for a in weights:
        a = (a + jnp.eye(n)) / 2
        rolled = (a / a.sum(axis=-1, keepdims=True)) @ rolled
    return rolled


def _attention(model, variables, x):
    """Logits and the attention map (T', H', W') of the module docstring's method for this model."""
    (logits, maps), state = model.apply(variables, x, method=_forward, mutable=["intermediates"])
    inter = state["intermediates"]
    if isinstance(model, UniFormerV2):
        t, n = maps["layer1"].shape[1:3]
        side = int(np.sqrt(n - 1))
        cross = jnp.stack(_weights(inter, "dec_")).mean(axis=0)  # (B, 1, T'·(1+L))
        return logits, cross.reshape(t, n)[:, 1:].reshape(t, side, side)
    t, h4, w4 = maps["stage4"].shape[1:4]
    if isinstance(model, UniFormerLight):
        return logits, inter["score"][0].reshape(t, h4, w4)
    h3, w3 = maps["stage3"].shape[2:4]
    relevance = _rollout(_weights(inter, "blocks4_"))[0].mean(axis=0).reshape(t, h4, w4)
    up = jnp.repeat(jnp.repeat(relevance, 2, axis=1), 2, axis=2)  # each stage-4 token merges 2x2 stage-3 tokens
    up = jnp.pad(up, ((0, 0), (0, h3 - 2 * h4), (0, w3 - 2 * w4)))  # an odd last row/column feeds no token
    relevance = up.reshape(-1) @ _rollout(_weights(inter, "blocks3_"))[0]
    return logits, relevance.reshape(t, h3, w3)


def make_heatmap(model, method: str, layer: str | None = None):
    """The jitted heatmap program of a model.

    Args:
      model: a UniFormer, light UniFormer or UniFormerV2 (float32 or bfloat16).
      method: `gradcam` or `attention`.
      layer: Grad-CAM's feature map (`map_names`); None: `default_layer`. Not used by `attention`.

    Returns:
      `heatmap(variables, clip (T, H, W, 3) uint8, target int32 (-1: the top-1 class)) -> (probabilities (K,),
      target, heat (T, H, W) in [0, 1])`.

    Raises:
      ValueError: an unknown method or map, or a layer given with `attention`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if layer is not None and method != "gradcam":
        raise ValueError("a layer is chosen for gradcam only; attention maps have their own (see --help)")
    if layer is not None and layer not in map_names(model):
        raise ValueError(f"this model's maps are {', '.join(map_names(model))}; got {layer!r}")

    def heatmap(variables, clip, target):
        x = normalise(clip[None], model.dtype)
        if method == "gradcam":
            logits, target, heat = _gradcam(model, variables, x, target, layer or default_layer(model, clip.shape[1]))
        else:
            logits, heat = _attention(model, variables, x)
            target = jnp.where(target < 0, jnp.argmax(logits[0]), target)
        heat = jax.image.resize(heat.astype(jnp.float32), clip.shape[:3], "linear")
        low, high = heat.min(), heat.max()
        heat = jnp.where(high > low, (heat - low) / jnp.maximum(high - low, 1e-12), 0.0)
        return jax.nn.softmax(logits[0].astype(jnp.float32)), target, heat

    return jax.jit(heatmap)


def explain(model, variables, clip: np.ndarray, method: str = "gradcam", target: int | None = None,
            layer: str | None = None) -> Heatmap:
    """A clip's heatmap for one class.

    Args:
      model: the model.
      variables: its variables.
      clip: (T, H, W, 3) uint8, as the model takes it.
      method: `gradcam` or `attention`.
      target: the class to explain; None: the top-1.
      layer: Grad-CAM's map; None: `default_layer`.

    Returns:
      The `Heatmap`.
    """
    program = make_heatmap(model, method, layer)
    probs, chosen, heat = program(variables, clip, jnp.int32(-1 if target is None else target))
    used = (layer or default_layer(model, clip.shape[1])) if method == "gradcam" else None
    return Heatmap(np.asarray(probs), int(chosen), np.asarray(heat), method, used)
