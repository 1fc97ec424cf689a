"""Which parameters a fine-tuning run trains: `train.freeze` = `none`, `backbone` (a linear probe) or `stages:N`.

Frozen parameters are passed around the optimiser, which holds no state for them, and never differentiated: JAX
computes no gradient a frozen prefix of the network would need, so a linear probe's step has no backward pass
through the backbone. Frozen stages also run as in evaluation (BatchNorm running statistics, which stay as they
were, and no drop path), as frozen feature extractors do in timm and MMAction2 (`frozen_stages`, `norm_eval`).
"""

from __future__ import annotations

import re

BACKBONE = 4  # `freeze_level("backbone")`: every stage and the final norms; only the heads learn
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
    m = re.fullmatch(r"stages:([1-3])", spec)
    if not m:
        hint = "; stages:4 is the whole backbone, train.freeze=backbone" if spec == "stages:4" else ""
        raise ValueError(f"train.freeze is {spec!r}; use none, backbone or stages:N with N from 1 to 3{hint}")
    return int(m.group(1))


def stage_of(name: str) -> int:
    """The stage a top-level parameter belongs to: 1-4, or 5 for what follows the stages (norms and heads).

    Args:
      name: a top-level name of the model's parameters (`patch_embed2`, `blocks3_1`, `norm`, `head`).

    Returns:
      The stage number.
    """
    m = re.fullmatch(r"(?:patch_embed|blocks)([1-4])(?:_\d+)?", name)
    return int(m.group(1)) if m else _STAGE_OF.get(name, 5)


def is_trainable(name: str, level: int) -> bool:
    """Whether a top-level parameter learns under a freeze level (the heads always do).

    Args:
      name: a top-level parameter name.
      level: `freeze_level`'s result.

    Returns:
      True when the optimiser updates it.
    """
    if level == BACKBONE:
        return name in _HEADS
    return stage_of(name) > level


def split(params: dict, level: int) -> tuple[dict, dict]:
    """The parameters the optimiser updates, and the frozen rest; `{**frozen, **trainable}` joins them again.

    Args:
      params: the model's parameters (top-level dict).
      level: `freeze_level`'s result.

    Returns:
      (trainable, frozen), each a dict of the top-level entries of `params`.
    """
    trainable = {k: v for k, v in params.items() if is_trainable(k, level)}
    return trainable, {k: v for k, v in params.items() if k not in trainable}
