"""Mixup and cutmix with label smoothing, as timm's `Mixup` in batch mode (SlowFast's copy of it), which the
original's training recipe uses: the inputs are mixed, and so are their target vectors (one-hot, or multi-hot for
multi-label data, as timm's mixup smooths and mixes both)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Mixing:
    """Mixup/cutmix as timm's `Mixup` in batch mode (SlowFast's copy of it), on groups of clips.

    The original mixes each GPU's own batch (clip i with clip n-1-i); here each group of `group` consecutive
    clips of the global batch draws its own mode, lambda and box, so the result does not depend on the number
    of devices.
    """
    mixup: float = 0.8  # Beta(a, a) for mixup; 0 turns it off
    cutmix: float = 1.0  # Beta(a, a) for cutmix; 0 turns it off
    switch: float = 0.5  # chance of cutmix when both are on
    smoothing: float = 0.1
    group: int = 8


def soft_targets(labels, num_classes: int, smoothing: float):
    """One-hot (or multi-hot) targets with label smoothing, as timm's mixup makes them.

    Args:
      labels: integer labels (B,), or multi-hot vectors (B, num_classes).
      num_classes: the class count.
      smoothing: the target mass spread over all classes.

    Returns:
      (B, num_classes) float32 targets.
    """
    off = smoothing / num_classes
    hot = labels.astype(jnp.float32) if labels.ndim == 2 else jax.nn.one_hot(labels, num_classes)
    return hot * (1.0 - smoothing) + off


def cutmix_box(key, height: int, width: int, lam):
    """timm's `rand_bbox` with `correct_lam`: a box of area ~(1 - lam) around a uniform centre, clipped.

    Args:
      key: a JAX PRNG key.
      height: the frames' height.
      width: the frames' width.
      lam: the mixing weight drawn for the batch.

    Returns:
      The (H, W) boolean mask of the box and lambda corrected to the clipped area.
    """
    ky, kx = jax.random.split(key)
    ratio = jnp.sqrt(1.0 - lam)
    cut_h, cut_w = (height * ratio).astype(jnp.int32), (width * ratio).astype(jnp.int32)
    cy, cx = jax.random.randint(ky, (), 0, height), jax.random.randint(kx, (), 0, width)
    y0, y1 = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
    x0, x1 = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
    rows, cols = jnp.arange(height), jnp.arange(width)
    mask = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
    return mask, 1.0 - ((y1 - y0) * (x1 - x0)) / (height * width)


def mix_group(video, labels, num_classes: int, mixing: Mixing, key):
    """One group of clips mixed with its own reverse (mixup or cutmix, as timm's Mixup in batch mode).

    Args:
      video: the group (G, T, H, W, C), normalised.
      labels: its integer labels (G,) or multi-hot vectors (G, num_classes).
      num_classes: the class count.
      mixing: the mixup/cutmix settings.
      key: a JAX PRNG key.

    Returns:
      The mixed video and its soft targets (G, num_classes).
    """
    k_switch, k_mixup, k_cutmix, k_box = jax.random.split(key, 4)
    targets = soft_targets(labels, num_classes, mixing.smoothing)
    if mixing.mixup <= 0 and mixing.cutmix <= 0:
        return video, targets
    flipped = video[::-1]
    use_cutmix = jnp.asarray(mixing.cutmix > 0)
    if mixing.mixup > 0 and mixing.cutmix > 0:
        use_cutmix = jax.random.uniform(k_switch) < mixing.switch
    lam_mixup = jax.random.beta(k_mixup, mixing.mixup, mixing.mixup) if mixing.mixup > 0 else 1.0
    lam_cutmix = jax.random.beta(k_cutmix, mixing.cutmix, mixing.cutmix) if mixing.cutmix > 0 else 1.0
    box, lam_box = cutmix_box(k_box, video.shape[2], video.shape[3], lam_cutmix)
    cut = jnp.where(box[None, None, :, :, None], flipped, video)
    blended = video * lam_mixup + flipped * (1.0 - lam_mixup)
    lam = jnp.where(use_cutmix, lam_box, lam_mixup)
    mixed = jnp.where(use_cutmix, cut, blended.astype(video.dtype))
    return mixed, lam * targets + (1.0 - lam) * targets[::-1]


def mix(video, labels, num_classes: int, mixing: Mixing, key):
    """Mixes a batch in groups of `mixing.group` consecutive clips (one GPU's batch in the original).

    Args:
      video: the batch (B, T, H, W, C), normalised.
      labels: integer labels (B,) or multi-hot vectors (B, num_classes).
      num_classes: the class count.
      mixing: the mixup/cutmix settings.
      key: a JAX PRNG key.

    Returns:
      The mixed video and its soft targets (B, num_classes).

    Raises:
      ValueError: a batch that does not split into groups.
    """
    b = video.shape[0]
    if b % mixing.group:
        raise ValueError(f"a batch of {b} clips cannot be mixed in groups of {mixing.group}")
    groups = b // mixing.group
    keys = jax.random.split(key, groups)
    grouped = video.reshape(groups, mixing.group, *video.shape[1:])
    mixed, targets = jax.vmap(lambda v, y, k: mix_group(v, y, num_classes, mixing, k))(
        grouped, labels.reshape(groups, mixing.group, *labels.shape[1:]), keys)
    return mixed.reshape(video.shape), targets.reshape(b, num_classes)
