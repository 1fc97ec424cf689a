"""Which parameters a fine-tuning run trains: `train.freeze` = `none`, `backbone` (a linear probe), `stages:N`
(UniFormer) or `frozen` (UniFormerV2's frozen-backbone recipe).

Frozen parameters are passed around the optimiser, which holds no state for them, and never differentiated: JAX
computes no gradient a frozen prefix of the network would need, so a linear probe's step has no backward pass
through the backbone. Frozen stages also run as in evaluation (BatchNorm running statistics, which stay as they
were, and no drop path), as frozen feature extractors do in timm and MMAction2 (`frozen_stages`, `norm_eval`).
UniFormerV2's `frozen` is OpenGVLab's (`exp/*/frozen_*`): CLIP's encoder (patch embedding, class token, positional
embedding, `ln_pre`, the residual blocks) stays as it is and the parts UniFormerV2 adds learn (the global UniBlocks'
position encodings and extractors, the video token, the final norm and the head); as there, the frozen blocks run
in training mode (a local MHRA's BatchNorm, which OpenGVLab's frozen models do not have, would update its
statistics).
"""

from __future__ import annotations

import re

from flax import traverse_util

BACKBONE = 4  # `freeze_level("backbone")`: every stage and the final norms; only the heads learn
ENCODER = 5  # `freeze_level("frozen")`: UniFormerV2's CLIP encoder
_STAGE_OF = {"cls_token": 3, "cls_upsample": 4}  # the light models' class token joins in stage 3, widens for 4
_HEADS = ("head", "head_cls")  # `variants.heads`: the light models train a second head on their class token


def freeze_level(spec: str) -> int:
    """The number of leading stages a `train.freeze` value freezes.

    Args:
      spec: `none`, `backbone`, or `stages:N` with N from 1 to 3.

    Returns:
      0 for none, N for `stages:N`, `BACKBONE` for the backbone.

    Raises:
      ValueError: another value.
    """
    if spec == "none":
        return 0
    if spec == "backbone":
        return BACKBONE
    if spec == "frozen":
        return ENCODER
    m = re.fullmatch(r"stages:([1-3])", spec)
    if not m:
        hint = "; stages:4 is the whole backbone, train.freeze=backbone" if spec == "stages:4" else ""
        raise ValueError(f"train.freeze is {spec!r}; use none, backbone, stages:N with N from 1 to 3 (UniFormer) "
                         f"or frozen (UniFormerV2){hint}")
    return int(m.group(1))


def check(spec: str, v2: bool) -> None:
    """Refuses a `train.freeze` value the model family has no meaning for.

    Args:
      spec: the `train.freeze` value.
      v2: the model is a UniFormerV2 (no stages; its own `frozen`).

    Raises:
      ValueError: an unknown value, `stages:N` for UniFormerV2 or `frozen` for UniFormer.
    """
    level = freeze_level(spec)
    if v2 and 0 < level < BACKBONE:
        raise ValueError(f"train.freeze is {spec!r}, but UniFormerV2 has no stages; use none, backbone or frozen")
    if not v2 and level == ENCODER:
        raise ValueError("train.freeze=frozen is UniFormerV2's; UniFormer takes none, backbone or stages:N")


def stage_of(name: str) -> int:
    """The stage a top-level parameter belongs to: 1-4, or 5 for what follows the stages (norms and heads).

    Args:
      name: a top-level name of the model's parameters (`patch_embed2`, `blocks3_1`, `norm`, `head`).

    Returns:
      The stage number.
    """
    m = re.fullmatch(r"(?:patch_embed|blocks)([1-4])(?:_\d+)?", name)
    return int(m.group(1)) if m else _STAGE_OF.get(name, 5)


def is_trainable(path: tuple[str, ...], level: int) -> bool:
    """Whether a parameter learns under a freeze level (the heads always do).

    Args:
      path: the parameter's path in the parameter tree (`("blocks3_1", "attn", "qkv", "kernel")`).
      level: `freeze_level`'s result.

    Returns:
      True when the optimiser updates it.
    """
    if level == BACKBONE:
        return path[0] in _HEADS
    if level == ENCODER:  # UniFormerV2: what lies in `transformer` beside CLIP's blocks, and the head
        return path[0] in _HEADS or (path[0] == "transformer" and not path[1].startswith("resblocks"))
    return stage_of(path[0]) > level


def split(params: dict, level: int) -> tuple[dict, dict]:
    """The parameters the optimiser updates, and the frozen rest; `join` puts them together again.

    Args:
      params: the model's parameters.
      level: `freeze_level`'s result.

    Returns:
      (trainable, frozen), each a tree of the entries of `params` it holds.
    """
    if level == 0:
        return params, {}
    flat = traverse_util.flatten_dict(params)
    trainable = {k: v for k, v in flat.items() if is_trainable(k, level)}
    frozen = {k: v for k, v in flat.items() if k not in trainable}
    return traverse_util.unflatten_dict(trainable), traverse_util.unflatten_dict(frozen)


def join(trainable: dict, frozen: dict) -> dict:
    """The parameter tree `split` divided.

    Args:
      trainable: `split`'s first tree.
      frozen: its second.

    Returns:
      The whole tree.
    """
    if not frozen:
        return trainable
    return traverse_util.unflatten_dict({**traverse_util.flatten_dict(frozen), **traverse_util.flatten_dict(trainable)})
