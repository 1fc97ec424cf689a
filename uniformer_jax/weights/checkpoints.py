"""Converted UniFormer checkpoints: an Orbax tree of `params` and `batch_stats` plus a JSON of metadata.

Layout of a checkpoint directory (as written by `python -m convert`):

    DIR/uniformer.json   variant, num_classes, ln_eps, class names, source form and sha256
    DIR/variables/       Orbax StandardCheckpointer tree {"params": ..., "batch_stats": ...}
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import linen as nn
from flax import traverse_util
from jax.experimental import multihost_utils

from uniformer_jax import storage
from uniformer_jax.models.variants import VARIANT_NAMES, create_model, init_input

METADATA_FILE = "uniformer.json"
VARIABLES_DIR = "variables"
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint that cannot be read or does not fit the model; the message says what to do."""


def abstract_variables(model: nn.Module) -> dict:
    """Shapes and dtypes of a model's variables, without computing them.

    Args:
      model: any model of `uniformer_jax.models`.

    Returns:
      `params` (and `batch_stats`) as a tree of `jax.ShapeDtypeStruct`s.
    """
    return jax.eval_shape(model.init, jax.random.key(0), init_input(model))


def shape_mismatches(found: Mapping[str, tuple], expected: Mapping[str, tuple]) -> list[str]:
    """Every missing key, unexpected key and shape mismatch between two {name: shape} maps.

    Args:
      found: what a file or checkpoint holds.
      expected: what the model needs.

    Returns:
      One line a problem (`missing: ...`, `unexpected: ...`, `shape of ...`); empty when they agree.
    """
    problems = [f"missing: {k} {tuple(expected[k])}" for k in expected if k not in found]
    problems += [f"unexpected: {k} {tuple(found[k])}" for k in found if k not in expected]
    problems += [f"shape of {k}: {tuple(found[k])}, expected {tuple(expected[k])}"
                 for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    return problems


def _flat_shapes(tree) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


def save_pretrained(directory: str | Path, variables: Mapping[str, Any], metadata: Mapping[str, Any],
                    overwrite: bool = False) -> Path:
    """Writes a converted checkpoint directory atomically on a local disk: on any failure the destination is left
    as it was. On a bucket (a URL; no renames there) the directory holds the old checkpoint, none, or the new one.

    With several processes every process calls it (each writes its shards of the arrays); process 0 alone
    writes the metadata and moves the directory into place.

    Args:
      directory: where the checkpoint goes (`uniformer.json` and Orbax `variables/` inside it), local or a URL.
      variables: `params` and `batch_stats` of the model (numpy or `jax.Array`s, sharded or not).
      metadata: at least `variant`, `num_classes` and `ln_eps`; `class_names`, `multi_label` (a head of one
        sigmoid a class), `source_form`, `source_sha256` and anything else JSON can hold are kept.
      overwrite: replace an existing directory (swapped in one step where the system can) instead of refusing.

    Returns:
      The directory's absolute path.

    Raises:
      CheckpointError: `directory` exists and `overwrite` is False.
    """
    directory = storage.absolute(directory)
    lead = jax.process_index() == 0
    if directory.exists() and not overwrite:
        raise CheckpointError(f"{directory} already exists; choose another destination or allow overwriting")
    if storage.is_url(directory):
        _save_in_place(directory, variables, metadata)
        return directory
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    # A name every process agrees on without talking: one writer per destination at a time.
    tmp = directory.parent / f".{directory.name}.partial"
    if lead:
        shutil.rmtree(tmp, ignore_errors=True)
    _barrier("uniformer_save_start")
    try:
        _write(tmp, variables, metadata, lead)
        if lead:
            _replace(tmp, directory)
    finally:
        if lead:
            shutil.rmtree(tmp, ignore_errors=True)
    _barrier("uniformer_save_end")
    return directory


def _save_in_place(directory: storage.Path, variables: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
    """`save_pretrained` on an object store, which has no renames: the metadata goes first and comes back last, so
    `directory` holds the old checkpoint, none (no `uniformer.json`: `read_metadata` refuses it), or the new one."""
    lead = jax.process_index() == 0
    if lead:
        (directory / METADATA_FILE).unlink(missing_ok=True)
        if (directory / VARIABLES_DIR).exists():
            (directory / VARIABLES_DIR).rmtree()
    _barrier("uniformer_save_start")
    _write(directory, variables, metadata, lead)
    _barrier("uniformer_save_end")


def _write(directory: Path | storage.Path, variables: Mapping[str, Any], metadata: Mapping[str, Any],
           lead: bool) -> None:
    """The Orbax tree (every process its shards), then the metadata (process 0, one file written last)."""
    checkpointer = ocp.StandardCheckpointer()
    # A model without BatchNorm (UniFormerV2's Kinetics structure) has empty statistics: none are written.
    checkpointer.save(directory / VARIABLES_DIR,
                      {k: variables[k] for k in ("params", "batch_stats") if variables.get(k)})
    checkpointer.wait_until_finished()
    if lead:
        (directory / METADATA_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **metadata}, indent=2))


def _replace(tmp: Path, directory: Path) -> None:
    """Moves `tmp` to `directory`. An existing one is swapped with it in one step where the system can (Linux
    renameat2 RENAME_EXCHANGE), so `directory` is complete at every instant; the old copy, left at `tmp`, is
    deleted after, and by `remove_leftovers` if a kill comes first. Elsewhere the old copy is renamed aside first."""
    if not directory.exists():
        tmp.rename(directory)
    elif _exchange(tmp, directory):
        shutil.rmtree(tmp)
    else:
        old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
        directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old)


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths atomically; False where the C library or the filesystem cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(b))


def remove_leftovers(directory: str | Path) -> None:
    """Deletes what a killed `save_pretrained` into `directory` can leave beside it.

    Args:
      directory: a destination of `save_pretrained` (on a bucket nothing is written beside it).
    """
    if storage.is_url(directory):
        return
    directory = Path(directory).absolute()
    for path in directory.parent.glob(f".{directory.name}.*"):
        if path.name == f".{directory.name}.partial" or path.name.startswith(f".{directory.name}.old-"):
            shutil.rmtree(path, ignore_errors=True)


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def train_manager(directory: str | Path, keep: int) -> ocp.CheckpointManager:
    """Training checkpoints in `directory`, written by Orbax.

    Asynchronous; each step is written to a temporary directory and renamed when complete; the last `keep` are
    kept, and the one with the best validation top-1 (mAP for multi-label data).

    Args:
      directory: the work directory's `checkpoints/`.
      keep: how many of the latest checkpoints to keep.

    Returns:
      The `orbax.checkpoint.CheckpointManager`.
    """
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(keep),
        ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m["map"] if "map" in m else m["top1"], n=1,
                                      keep_checkpoints_without_metrics=False)])
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, enable_async_checkpointing=True,
                                           cleanup_tmp_directories=True)
    return ocp.CheckpointManager(storage.absolute(directory), options=options)


def read_metadata(directory: str | Path) -> dict:
    """The metadata (`uniformer.json`) of a converted checkpoint directory.

    Args:
      directory: a converted checkpoint.

    Returns:
      The metadata: `variant`, `num_classes`, `ln_eps`, `class_names`, source form and sha256, and what else was saved.

    Raises:
      CheckpointError: no metadata, unreadable JSON, or a format or variant this version cannot read.
    """
    path = storage.path(directory) / METADATA_FILE
    try:
        metadata = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{directory} is not a converted checkpoint (no {METADATA_FILE}); "
                              "make one with `python -m convert SRC DST`") from None
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    if metadata.get("format_version") != FORMAT_VERSION or metadata.get("variant") not in VARIANT_NAMES:
        raise CheckpointError(f"{path} is not metadata this version can read (format_version "
                              f"{metadata.get('format_version')!r}, variant {metadata.get('variant')!r})")
    return metadata


def load_directory(directory: str | Path, **model_kwargs) -> tuple[nn.Module, dict]:
    """The model a converted checkpoint directory describes and its variables, checked strictly.

    Args:
      directory: a converted checkpoint (what `save_pretrained` and `python -m convert` write), local or a URL.
      **model_kwargs: run-time options of the model (`dtype`, `attention`, `remat`, `drop_path_rate`); the
        variant, class count and LayerNorm eps come from the checkpoint.

    Returns:
      The Flax module and its variables as host arrays.

    Raises:
      CheckpointError: no metadata, metadata of another format, or variables whose names or shapes differ from
        the model's (every mismatch listed), or an unreadable Orbax tree.
    """
    metadata = read_metadata(directory)
    model = create_model(metadata["variant"], num_classes=metadata["num_classes"], ln_eps=metadata["ln_eps"],
                         **metadata.get("architecture", {}), **model_kwargs)
    expected = abstract_variables(model)
    path = storage.absolute(directory) / VARIABLES_DIR
    checkpointer = ocp.StandardCheckpointer()
    try:
        stored = checkpointer.metadata(path).item_metadata.tree
    except Exception as e:  # Orbax raises many types for a damaged tree; all mean the same to the user.
        raise CheckpointError(f"cannot read the Orbax checkpoint in {path}: {e}") from None
    problems = shape_mismatches(_flat_shapes(stored), _flat_shapes(expected))
    if problems:
        raise CheckpointError(f"{path} does not fit {metadata['variant']} with {metadata['num_classes']} classes:\n  "
                              + "\n  ".join(problems))
    # Whole host arrays, whatever device layout the checkpoint was written from (a sharded training run's).
    target = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), expected)
    try:
        variables = checkpointer.restore(path, target)
    except Exception as e:
        raise CheckpointError(f"cannot restore {path}: {e}") from None
    return model, variables
