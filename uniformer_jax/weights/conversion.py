"""PyTorch UniFormer checkpoints -> converted Orbax checkpoints, and back."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import jax

from uniformer_jax.data import class_lists
from uniformer_jax.models.variants import (
    VARIANT_NAMES,
    architecture_of,
    create_model,
    describe,
    heads,
    init_input,
    is_v2,
    new_heads,
    stage_depths,
    variant_of,
)
from uniformer_jax.models.variants import structure as v2_structure  # `structure` is to_orbax's argument
from uniformer_jax.weights import torch_keys as keys
from uniformer_jax.weights.checkpoints import (
    abstract_variables,
    load_directory,
    read_metadata,
    save_pretrained,
    shape_mismatches,
)
from uniformer_jax.weights.torch_files import (
    FORMS,
    INFLATE_MODES,
    ConversionError,
    check_finite,
    inflate,
    load_torch_file,
    read_state_dict,
    require_torch,
    to_opengvlab,
)

# The LayerNorm eps of the attention blocks that trained each form's weights.
LN_EPS = {"sensex": 1e-6, "sensex-train": 1e-6, "imagenet": 1e-6, "mmaction2": 1e-5, "opengvlab": 1e-5,
          "opengvlab-train": 1e-5, "clip": 1e-5}

__all__ = ["FORMS", "INFLATE_MODES", "ConversionError", "to_orbax", "to_torch"]


def sha256(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB chunks.

    Args:
      path: any file.

    Returns:
      The hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _new_in_v2(key: str) -> bool:
    """Whether a UniFormerV2 key names a part that CLIP's image encoder does not have."""
    return key.startswith(("transformer.temporal_cls_token", "transformer.dpe.", "transformer.dec.",
                           "transformer.balance", "transformer.norm.", "head.")) or ".lmhra" in key


def _class_names(labels, reorder_to, num_classes):
    """Class names of the converted head, and its rows in `reorder_to`'s order (or None)."""
    try:
        names = class_lists.read_class_names(labels) if labels else None
        target = class_lists.read_class_names(reorder_to) if reorder_to else None
        if names is not None and len(names) != num_classes:
            raise ValueError(f"{labels} names {len(names)} classes, but the head has {num_classes}")
        if target is None:
            return names, None
        if names is None:
            raise ValueError("--reorder-to needs --labels naming the classes of the source head rows")
        order = class_lists.head_rows(names, target)
    except ValueError as e:
        raise ConversionError(str(e)) from None
    return target, order


def to_orbax(src: str | Path, dst: str | Path, *, form: str | None = None, variant: str | None = None,
             num_classes: int | None = None, labels: str | None = None, reorder_to: str | None = None,
             inflate_mode: str = "average", ln_eps: float | None = None, structure: str | None = None,
             seed: int = 0, overwrite: bool = False,
             extra: dict | None = None, source_sha256: str | None = None) -> dict:
    """Converts a PyTorch checkpoint file into a converted checkpoint directory (`python -m convert SRC DST`).

    Args:
      src: a released or trained `.pth` file of any form in `FORMS`.
      dst: the directory to write, atomically.
      form: the checkpoint form; None detects it from the file's keys.
      variant: the model variant; None detects it from the block counts (and, for XXS/XS, the class token and
        layer-scale keys).
      num_classes: the head's size; None keeps the source head's. Another size initialises a new head
        (truncated normal, std .02, as Sense-X does when fine-tuning from ImageNet).
      labels: class names of the source head rows, a file or a packaged list's short name.
      reorder_to: a class list whose order the head rows are permuted into (matched by name); from a K710 head,
        the Kinetics-400/600/700 rows are selected as MMAction2's channel maps select them.
      inflate_mode: how 2D ImageNet kernels become 3D: `average` (Sense-X) or `center` (MMAction2); CLIP's
        patch embedding is always inflated to the centre, as both UniFormerV2 codebases do.
      ln_eps: LayerNorm epsilon of the attention blocks; None takes the form's (`LN_EPS`).
      structure: for a CLIP encoder, the UniFormerV2 it becomes (`variants.STRUCTURES`; None: `kinetics`);
        the parts CLIP lacks are initialised as the original's constructor does.
      seed: the seed of a new head (and of a CLIP encoder's new parts).
      overwrite: replace an existing `dst`.
      extra: further metadata entries.
      source_sha256: the file's sha256 where the caller has already hashed it (saves reading it again).

    Returns:
      The metadata written to `uniformer.json`.

    Raises:
      ConversionError: missing, unexpected or mis-shaped tensors (all listed), NaN/Inf, an unknown form or
        variant, a class list that does not fit, or an existing `dst` without `overwrite`.
    """
    if Path(dst).exists() and not overwrite:
        raise ConversionError(f"{dst} already exists; choose another destination or pass --force")
    state_dict, form = read_state_dict(load_torch_file(str(src)), form)
    variant = variant or variant_of(state_dict)
    if variant not in VARIANT_NAMES:
        raise ConversionError(f"unknown variant: blocks per stage {stage_depths(state_dict)} match none of "
                              f"{describe()}")
    head = state_dict.get("head.weight")
    source_classes = None if head is None else head.shape[0]
    num_classes = num_classes or source_classes
    if num_classes is None:
        raise ConversionError("the checkpoint has no classification head; pass --num-classes to initialise one")
    ln_eps = LN_EPS[form] if ln_eps is None else ln_eps
    if structure is not None and form != "clip":
        raise ConversionError(f"--structure applies to CLIP encoders, not to a {form} checkpoint (whose keys "
                              "give its structure)")
    try:
        architecture = (v2_structure(structure or "kinetics", variant)
                        if form == "clip" else architecture_of(state_dict))
        model = create_model(variant, num_classes=source_classes or num_classes, ln_eps=ln_eps, **architecture)
    except ValueError as e:
        raise ConversionError(str(e)) from None
    expected = keys.torch_shapes(abstract_variables(model))
    if source_classes is None:
        expected = {k: v for k, v in expected.items() if k.split(".")[0] not in heads(variant)}
    if form == "imagenet":
        state_dict = inflate(state_dict, expected, inflate_mode)
    if form == "clip":
        inflate_mode = "center"  # OpenGVLab's and MMAction2's `inflate_weight(center=True)`
        state_dict = inflate(state_dict, expected, inflate_mode)
        expected = {k: v for k, v in expected.items() if not _new_in_v2(k)}
    check_finite(state_dict)
    found = {k: v.shape for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    problems = shape_mismatches(found, expected)
    if problems:
        raise ConversionError(f"the {form} checkpoint does not fit {variant}:\n  " + "\n  ".join(problems))
    if form == "clip":  # the parts CLIP lacks, initialised as the original's constructor does
        fresh = keys.to_torch(jax.jit(model.init)(jax.random.key(seed), init_input(model)))
        state_dict = {**{k: v for k, v in fresh.items() if _new_in_v2(k)}, **state_dict}
    variables = keys.to_flax(state_dict)
    if num_classes != source_classes:
        variables["params"].update(new_heads(jax.random.key(seed), variant, num_classes))
    class_names, order = _class_names(labels, reorder_to, num_classes)
    head_state = "initialised" if num_classes != source_classes else "converted"
    if order is not None:
        for name in heads(variant):
            head = variables["params"][name]
            variables["params"][name] = {"kernel": head["kernel"][:, order], "bias": head["bias"][order]}
        num_classes = len(order)  # fewer where K710 rows were selected for K400/600/700
    metadata = {
        "variant": variant,
        "num_classes": int(num_classes),
        "ln_eps": ln_eps,
        "class_names": class_names,
        "source_form": form,
        "source_file": Path(src).name,
        "source_sha256": source_sha256 or sha256(src),
        "inflate": inflate_mode if form in ("imagenet", "clip") else None,
        "head": head_state,
        **({"architecture": architecture} if architecture else {}),
        **(extra or {}),
    }
    save_pretrained(dst, variables, metadata, overwrite=overwrite)
    return metadata


def to_torch(src_dir: str | Path, out: str | Path, *, overwrite: bool = False) -> dict:
    """Writes a converted checkpoint as a Sense-X state dict, or for UniFormerV2 as an OpenGVLab `.pyth` (flat,
    `backbone.` keys) (`python -m convert --to-torch DIR OUT.pth`).

    `.pth -> directory -> .pth` is bit-exact; BatchNorm's `num_batches_tracked`, which JAX does not keep, comes
    back as 0.

    Args:
      src_dir: a converted checkpoint directory.
      out: the `.pth` file to write, atomically; `torch.load` and `load_state_dict` read it.
      overwrite: replace an existing `out`.

    Returns:
      `{"keys": N, "form": F}`: the number of tensors written and their form (`sensex` or `opengvlab`).

    Raises:
      ConversionError: `out` exists and `overwrite` is False.
      CheckpointError: `src_dir` is not a readable converted checkpoint.
    """
    torch = require_torch()
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConversionError(f"{out} already exists; choose another destination or pass --force")
    _, variables = load_directory(src_dir)
    arrays = keys.to_torch(variables)
    form = "opengvlab" if is_v2(read_metadata(src_dir)["variant"]) else "sensex"
    if form == "opengvlab":
        arrays = to_opengvlab(arrays)
    # A copy: restored arrays are read-only.
    state_dict = {k: torch.tensor(v) for k, v in arrays.items()}
    fd, tmp = tempfile.mkstemp(dir=out.absolute().parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state_dict, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return {"keys": len(state_dict), "form": form}
