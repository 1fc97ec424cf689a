"""Every UniFormer variant by name: UniFormer-S/B (`uniformer_jax.models.uniformer`) and the lightweight XXS/XS
(`uniformer_jax.models.light`, `_ls` with layer scale), built, recognised from a state dict, and counted."""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax
import numpy as np
from flax import linen as nn

from uniformer_jax.models import layers, light, uniformer

VARIANT_NAMES = (*uniformer.DEPTHS, *light.SPECS)
FEATURES = {**{name: uniformer.EMBED_DIM[-1] for name in uniformer.DEPTHS},
            **{name: spec.embed_dim[-1] for name, spec in light.SPECS.items()}}


def create_model(name: str, **kwargs) -> nn.Module:
    """A model built from scratch, initialised (by `init`) as PyTorch initialises the original.

    `create_model("uniformer_base", num_classes=174, drop_path_rate=0.3)`.

    Args:
      name: a variant, one of `VARIANT_NAMES` (`uniformer_small`, `uniformer_base`, `uniformer_xxs`, ...).
      **kwargs: the model's attributes: `num_classes`, `drop_path_rate`, `ln_eps`, `dtype`, `attention`, `remat`
        (and `prune_ratio`, `trade_off` for the light models).

    Returns:
      The Flax module: `uniformer.UniFormer` for S/B, `light.UniFormerLight` for XXS/XS.

    Raises:
      ValueError: `name` is not a variant.
    """
    if name in uniformer.DEPTHS:
        return uniformer.UniFormer(depth=uniformer.DEPTHS[name], **kwargs)
    if name in light.SPECS:
        spec = light.SPECS[name]
        return light.UniFormerLight(depth=spec.depth, embed_dim=spec.embed_dim, head_dim=spec.head_dim,
                                    layer_scale=spec.layer_scale, **kwargs)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(VARIANT_NAMES)}")


def is_light(name: str) -> bool:
    """Whether a variant is one of the lightweight XXS/XS models (a class token, token pruning, two heads).

    Args:
      name: a variant of `VARIANT_NAMES`.

    Returns:
      True for the `uniformer_xxs*` and `uniformer_xs*` variants.
    """
    return name in light.SPECS


def heads(name: str) -> tuple[str, ...]:
    """The classification heads of a variant: the light models train a second one on their class token.

    Args:
      name: a variant of `VARIANT_NAMES`.

    Returns:
      The heads' parameter names, `("head",)` or `("head", "head_cls")`.
    """
    return ("head", "head_cls") if is_light(name) else ("head",)


def new_heads(key, name: str, num_classes: int) -> dict:
    """Freshly initialised heads, as Sense-X makes them when fine-tuning for other classes.

    Args:
      key: a JAX PRNG key.
      name: a variant of `VARIANT_NAMES`.
      num_classes: the heads' output size.

    Returns:
      `{head: {"kernel", "bias"}}` numpy arrays for each of `heads(name)`: truncated normal (std 0.02), zero bias.
    """
    kernels = jax.random.split(key, len(heads(name)))
    return {head: {"kernel": np.asarray(layers.linear_init(k, (FEATURES[name], num_classes))),
                   "bias": np.zeros(num_classes, np.float32)} for head, k in zip(heads(name), kernels, strict=True)}


def stage_depths(keys) -> tuple[int, ...]:
    """Blocks per stage, from `blocksS.I.` key prefixes.

    Args:
      keys: Sense-X state-dict keys.

    Returns:
      The four stages' block counts (0 for a stage without keys).
    """
    depth = [0, 0, 0, 0]
    for key in keys:
        m = re.match(r"blocks([1-4])\.(\d+)\.", key)
        if m:
            s = int(m.group(1)) - 1
            depth[s] = max(depth[s], int(m.group(2)) + 1)
    return tuple(depth)


def variant_of(state_dict: Mapping) -> str | None:
    """The variant whose blocks (and, for the light models, layer scale) a Sense-X-keyed state dict has.

    Args:
      state_dict: a Sense-X-keyed state dict (only its keys are read).

    Returns:
      The variant's name, or None when no variant has those blocks.
    """
    depth = stage_depths(state_dict)
    if "cls_token" not in state_dict:
        return next((name for name, d in uniformer.DEPTHS.items() if depth == d), None)
    scaled = any(k.endswith(".gamma_1") for k in state_dict)
    return next((name for name, spec in light.SPECS.items()
                 if spec.depth == depth and (spec.layer_scale is not None) == scaled), None)


DEPTHS = {**uniformer.DEPTHS, **{name: spec.depth for name, spec in light.SPECS.items()}}


def describe() -> str:
    """Each variant's blocks per stage, for error messages.

    Returns:
      One line, e.g. `uniformer_small (3, 4, 8, 3), uniformer_base (5, 8, 20, 7), ...`.
    """
    return ", ".join(f"{name} {depth}" for name, depth in DEPTHS.items())


def flops(name: str, frames: int, size: int = 224, num_classes: int = 400) -> int:
    """Forward FLOPs of one clip as fvcore counts them (the papers' figures: one per multiply-accumulate).

    Args:
      name: a variant of `VARIANT_NAMES`.
      frames: the clip's frame count.
      size: the clip's height and width.
      num_classes: the head's size.

    Returns:
      The FLOP count of one eval-mode forward pass.
    """
    if is_light(name):
        return light.flops(light.SPECS[name], frames, size, num_classes)
    return uniformer.flops(uniformer.DEPTHS[name], frames, size, num_classes)
