"""Sense-X state-dict keys <-> Flax variable paths, with the transpositions between the two layouts.

The Flax modules carry the PyTorch module names, so the mapping is mechanical:
`blocks3.0.attn.qkv.weight` (out, in) <-> `params/blocks3_0/attn/qkv/kernel` (in, out),
Conv3d weights (O, I/g, kT, kH, kW) <-> kernels (kT, kH, kW, I/g, O), norm `weight` <-> `scale`,
BatchNorm `running_mean`/`running_var` <-> `batch_stats/.../mean`/`var`.
"""

from __future__ import annotations

import re

import numpy as np
from flax import traverse_util

CONV_TO_FLAX = (2, 3, 4, 1, 0)
CONV_TO_TORCH = (4, 3, 0, 1, 2)


def _module_to_flax(module: str) -> list[str]:
    """`blocks3.0` -> `blocks3_0`, `patch_embed1.proj.0` (a Sequential's item) -> `patch_embed1/proj_0`."""
    return re.sub(r"\.(\d+)(?=\.|$)", r"_\1", module).split(".") if module else []


def _module_to_torch(parts) -> str:
    # CLIP's `ln_1`..`ln_3` keep their underscore; every other `_N` is a list or Sequential index.
    return re.sub(r"(?<!ln)_(\d+)(?=\.|$)", r".\1", ".".join(parts))


def flax_leaf(key: str, ndim: int) -> tuple[tuple[str, ...], tuple[int, ...] | None] | None:
    """The Flax path of a state-dict key and the axis order that turns the tensor into the leaf.

    Args:
      key: a Sense-X state-dict key.
      ndim: the tensor's rank.

    Returns:
      (path, axes): the variable path (collection first) and the transpose to apply, or None for no transpose;
      None for `num_batches_tracked`, which Flax's BatchNorm does not keep. Unknown names map to paths that no
      model has, so that a strict comparison reports them.
    """
    module, _, leaf = key.rpartition(".")
    parts = _module_to_flax(module)
    if leaf == "num_batches_tracked":
        return None
    if leaf == "weight" and ndim in (2, 5):
        return ("params", *parts, "kernel"), (1, 0) if ndim == 2 else CONV_TO_FLAX
    names = {"weight": ("params", "scale"), "bias": ("params", "bias"),
             "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
    collection, name = names.get(leaf, ("params", leaf))
    return (collection, *parts, name), None


def torch_key(path: tuple[str, ...], ndim: int) -> tuple[str, tuple[int, ...] | None]:
    """The state-dict key of a Flax leaf and the axis order that turns the leaf into the tensor.

    Args:
      path: the variable path, collection first.
      ndim: the leaf's rank.

    Returns:
      (key, axes): the Sense-X key and the transpose to apply, or None for no transpose.
    """
    collection, *parts, name = path
    prefix = _module_to_torch(parts) + "." if parts else ""
    if name == "kernel":
        return f"{prefix}weight", (1, 0) if ndim == 2 else CONV_TO_TORCH
    leaf = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}.get(name, name)
    return f"{prefix}{leaf}", None


def torch_shapes(abstract_variables) -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes (less `num_batches_tracked`) that a model's variables correspond to.

    Args:
      abstract_variables: the model's variables or their shapes (`checkpoints.abstract_variables`).

    Returns:
      {Sense-X key: PyTorch shape}.
    """
    shapes = {}
    for path, leaf in traverse_util.flatten_dict(abstract_variables).items():
        key, order = torch_key(path, len(leaf.shape))
        shapes[key] = tuple(int(leaf.shape[i]) for i in order) if order else tuple(leaf.shape)
    return shapes


def to_flax(state_dict: dict[str, np.ndarray]) -> dict:
    """Nested Flax variables from a Sense-X state dict of numpy arrays.

    Args:
      state_dict: numpy arrays by Sense-X key.

    Returns:
      {collection: nested parameters}, tensors transposed to Flax's layouts.
    """
    flat = {}
    for key, value in state_dict.items():
        mapped = flax_leaf(key, value.ndim)
        if mapped is not None:
            path, order = mapped
            flat[path] = np.ascontiguousarray(value.transpose(order)) if order else value
    return traverse_util.unflatten_dict(flat)


def to_torch(variables) -> dict[str, np.ndarray]:
    """A Sense-X state dict of numpy arrays from Flax variables.

    Args:
      variables: `params` and `batch_stats`.

    Returns:
      Numpy arrays by Sense-X key in PyTorch's layouts, with a zero `num_batches_tracked` for each BatchNorm.
    """
    state_dict = {}
    for path, value in traverse_util.flatten_dict(variables).items():
        value = np.asarray(value)
        key, order = torch_key(path, value.ndim)
        state_dict[key] = np.ascontiguousarray(value.transpose(order)) if order else value
        if path[0] == "batch_stats" and path[-1] == "var":
            state_dict[key.replace("running_var", "num_batches_tracked")] = np.array(0, np.int64)
    return state_dict
