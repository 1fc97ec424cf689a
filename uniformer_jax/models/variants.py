"""Every UniFormer variant by name: UniFormer-S/B (`uniformer_jax.models.uniformer`), the lightweight XXS/XS
(`uniformer_jax.models.light`, `_ls` with layer scale) and UniFormerV2 B/16, L/14, L/14@336
(`uniformer_jax.models.uniformerv2`), built, recognised from a state dict, and counted."""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax
import numpy as np
from flax import linen as nn

from uniformer_jax.models import layers, light, uniformer, uniformerv2

VARIANT_NAMES = (*uniformer.DEPTHS, *light.SPECS, *uniformerv2.SPECS)
FEATURES = {**{name: uniformer.EMBED_DIM[-1] for name in uniformer.DEPTHS},
            **{name: spec.embed_dim[-1] for name, spec in light.SPECS.items()},
            **{name: spec.width for name, spec in uniformerv2.SPECS.items()}}


def create_model(name: str, **kwargs) -> nn.Module:
    """A model built from scratch, initialised (by `init`) as PyTorch initialises the original.

    `create_model("uniformer_base", num_classes=174, drop_path_rate=0.3)`.

    Args:
      name: a variant, one of `VARIANT_NAMES` (`uniformer_small`, `uniformer_base`, `uniformer_xxs`, ...,
        `uniformerv2_b16`, ...).
      **kwargs: the model's attributes: `num_classes`, `drop_path_rate`, `ln_eps`, `dtype`, `attention`, `remat`
        (and `prune_ratio`, `trade_off` for the light models; `architecture_of`'s fields, `backbone_drop_path_rate`,
        `mlp_dropout`, `head_dropout` for UniFormerV2, whose `remat` is a count of blocks and whose LayerNorms
        are CLIP's, eps 1e-5).

    Returns:
      The Flax module: `uniformer.UniFormer` for S/B, `light.UniFormerLight` for XXS/XS,
      `uniformerv2.UniFormerV2`.

    Raises:
      ValueError: `name` is not a variant, or an `ln_eps` other than 1e-5 for UniFormerV2.
    """
    if name in uniformerv2.SPECS:
        if kwargs.pop("ln_eps", uniformerv2.LN_EPS) != uniformerv2.LN_EPS:
            raise ValueError(f"UniFormerV2's LayerNorms have eps {uniformerv2.LN_EPS} (CLIP's)")
        spec = uniformerv2.SPECS[name]
        return uniformerv2.UniFormerV2(patch=spec.patch, width=spec.width, layers=spec.layers, size=spec.size,
                                       **kwargs)
    if name in uniformer.DEPTHS:
        return uniformer.UniFormer(depth=uniformer.DEPTHS[name], **kwargs)
    if name in light.SPECS:
        spec = light.SPECS[name]
        return light.UniFormerLight(depth=spec.depth, embed_dim=spec.embed_dim, head_dim=spec.head_dim,
                                    layer_scale=spec.layer_scale, **kwargs)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(VARIANT_NAMES)}")


def init_input(model: nn.Module) -> np.ndarray:
    """A clip that `model.init` builds every variable from: 8 frames of 64x64, or the input size that a
    UniFormerV2's positional embedding fixes.

    Args:
      model: a module of `create_model`.

    Returns:
      Zeros, float32 `(1, 8, H, W, 3)`.
    """
    size = getattr(model, "size", 64)
    return np.zeros((1, 8, size, size, 3), np.float32)


def is_v2(name: str) -> bool:
    """Whether a variant is a UniFormerV2 model.

    Args:
      name: a variant of `VARIANT_NAMES`.

    Returns:
      True for the `uniformerv2_*` variants.
    """
    return name in uniformerv2.SPECS


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
    return tuple(_count(keys, rf"blocks{s}\.(\d+)\.") for s in range(1, 5))


def variant_of(state_dict: Mapping) -> str | None:
    """The variant whose blocks (and, for the light models, layer scale) a Sense-X-keyed state dict has.

    Args:
      state_dict: a Sense-X-keyed state dict (only its keys are read).

    Returns:
      The variant's name, or None when no variant has those blocks.
    """
    if V2_KEY in state_dict:
        return _v2_variant_of(state_dict)
    depth = stage_depths(state_dict)
    if "cls_token" not in state_dict:
        return next((name for name, d in uniformer.DEPTHS.items() if depth == d), None)
    scaled = any(k.endswith(".gamma_1") for k in state_dict)
    return next((name for name, spec in light.SPECS.items()
                 if spec.depth == depth and (spec.layer_scale is not None) == scaled), None)


V2_KEY = "transformer.resblocks.0.attn.in_proj_weight"  # a UniFormerV2 (CLIP-block) state dict has it


def _v2_variant_of(state_dict: Mapping) -> str | None:
    width = state_dict["class_embedding"].shape[0] if "class_embedding" in state_dict else None
    patch = state_dict["conv1.weight"].shape[-1] if "conv1.weight" in state_dict else None
    rows = state_dict["positional_embedding"].shape[0] if "positional_embedding" in state_dict else None
    layers_found = _count(state_dict, r"transformer\.resblocks\.(\d+)\.")
    return next((name for name, spec in uniformerv2.SPECS.items()
                 if (spec.patch, spec.width, spec.layers) == (patch, width, layers_found)
                 and rows == (spec.size // spec.patch) ** 2 + 1), None)


def _count(keys, pattern: str) -> int:
    """One more than the largest index `pattern`'s group matches at the start of a key: blocks in a list."""
    return max((int(m.group(1)) + 1 for m in map(lambda k: re.match(pattern, k), keys) if m), default=0)


def architecture_of(state_dict: Mapping) -> dict:
    """A UniFormerV2 state dict's structure, read from its keys (the spec's rule): global UniBlocks from the
    `dec.J` count, local MHRA from `lmhra1`/`lmhra2` keys, temporal downsampling from the stem's kernel depth,
    frozen from a missing `balance`.

    Args:
      state_dict: a state dict with this package's UniFormerV2 keys (`torch_files.read_state_dict`'s).

    Returns:
      `n_layers`, `lmhra`, `double_lmhra`, `temporal_downsample`, `frozen`; or {} for the v1 models (whose
      variant says everything).
    """
    if V2_KEY not in state_dict:
        return {}
    stem = state_dict.get("conv1.weight")
    return {"n_layers": _count(state_dict, r"transformer\.dec\.(\d+)\."),
            "lmhra": any(".lmhra1." in k for k in state_dict),
            "double_lmhra": any(".lmhra2." in k for k in state_dict),
            "temporal_downsample": stem is not None and stem.ndim == 5 and stem.shape[2] == 3,
            "frozen": "transformer.balance" not in state_dict}


STRUCTURES = ("kinetics", "sth", "frozen")


def structure(name: str, variant: str) -> dict:
    """The released configs' structures (spec §1.1): what a CLIP encoder becomes.

    Args:
      name: `kinetics` (also MiT, ActivityNet, HACS: 4 global UniBlocks), `sth` (Something-Something: local MHRA
        twice a block, temporal downsampling, global UniBlocks on the last 8 of 12 or 16 of 24 blocks) or `frozen`
        (the frozen-backbone models: no `balance`).
      variant: a UniFormerV2 variant.

    Returns:
      `UniFormerV2` attributes.

    Raises:
      ValueError: an unknown name.
    """
    spec = uniformerv2.SPECS[variant]
    if name == "kinetics":
        return {"n_layers": 4}
    if name == "sth":
        return {"n_layers": spec.layers * 2 // 3, "lmhra": True, "double_lmhra": True, "temporal_downsample": True}
    if name == "frozen":
        return {"n_layers": 4, "frozen": True}
    raise ValueError(f"unknown UniFormerV2 structure {name!r}; choose one of {', '.join(STRUCTURES)}")


DEPTHS = {**uniformer.DEPTHS, **{name: spec.depth for name, spec in light.SPECS.items()}}


def describe() -> str:
    """Each variant's blocks, for error messages.

    Returns:
      One line, e.g. `uniformer_small (3, 4, 8, 3), ..., uniformerv2_b16 (patch 16, width 768, 12 blocks)`.
    """
    return ", ".join([*(f"{name} {depth}" for name, depth in DEPTHS.items()),
                      *(f"{name} (patch {s.patch}, width {s.width}, {s.layers} blocks, {s.size}px)"
                        for name, s in uniformerv2.SPECS.items())])


def flops(name: str, frames: int, size: int | None = None, num_classes: int = 400, **architecture) -> int:
    """Forward FLOPs of one clip as fvcore counts them (the papers' figures: one per multiply-accumulate).

    Args:
      name: a variant of `VARIANT_NAMES`.
      frames: the clip's frame count.
      size: the clip's height and width; None: 224, or a UniFormerV2's own size.
      num_classes: the head's size.
      **architecture: a UniFormerV2's structure (`architecture_of`'s fields).

    Returns:
      The FLOP count of one eval-mode forward pass.

    Raises:
      ValueError: a size other than a UniFormerV2's own.
    """
    if is_v2(name):
        spec = uniformerv2.SPECS[name]
        if size not in (None, spec.size):
            raise ValueError(f"{name} takes {spec.size}x{spec.size} frames, not {size}")
        return uniformerv2.flops(spec, frames, num_classes, **architecture)
    if is_light(name):
        return light.flops(light.SPECS[name], frames, size or 224, num_classes)
    return uniformer.flops(uniformer.DEPTHS[name], frames, size or 224, num_classes)
