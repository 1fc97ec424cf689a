"""Reading every form of released UniFormer PyTorch checkpoint into a Sense-X-keyed state dict.

Forms (Sense-X's released files and `slowfast/utils/checkpoint.py`, MMAction2's runner):
  sensex        released Sense-X video weights: a flat state dict
  sensex-train  Sense-X training checkpoints: {"model_state": ..., "optimizer_state": ..., "cfg": ...}
  mmaction2     mmengine checkpoints: {"state_dict": {"backbone.*", "cls_head.fc_cls.*"}, "meta": ...}
  imagenet      ImageNet-1K 2D weights ({"model": ...} or flat), inflated to 3D on conversion
  opengvlab     released UniFormerV2 weights (`.pyth`): a flat state dict, `backbone.` keys
  opengvlab-train  UniFormerV2 training checkpoints: {"model_state": ..., ...}
  clip          CLIP image encoders (ViT-B/16, ViT-L/14, ViT-L/14@336px) as a UniFormerV2 initialisation: OpenAI's
                TorchScript archives (`ViT-B-16.pt`), open_clip's and other `visual.*` state dicts, or the visual
                keys alone as OpenGVLab's and MMAction2's extracted `vit_b16.pth` files hold them
MMAction2's UniFormerV2 files are the `mmaction2` form. Any of them may carry a DistributedDataParallel `module.`
prefix. UniFormerV2 keys become MMAction2's backbone keys, its head `head.*` (OpenGVLab's `transformer.proj.0`
is MMAction2's `transformer.norm`, `transformer.proj.2` the head).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping

import numpy as np

from uniformer_jax.models.variants import V2_KEY

FORMS = ("sensex", "sensex-train", "mmaction2", "imagenet", "opengvlab", "opengvlab-train", "clip")
CONTAINERS = {"sensex": None, "sensex-train": "model_state", "mmaction2": "state_dict", "imagenet": "model",
              "opengvlab": None, "opengvlab-train": "model_state", "clip": None}
# What CLIP's image encoder has and UniFormerV2 does not (OpenGVLab's extraction drops them, extract.ipynb).
CLIP_DROPPED = ("proj", "ln_post.weight", "ln_post.bias")
# The container-only forms of Sense-X and OpenGVLab look alike; the keys tell them apart.
V2_FORMS = {"sensex": "opengvlab", "sensex-train": "opengvlab-train"}
OPENGVLAB_RENAMES = (("transformer.proj.0.", "transformer.norm."), ("transformer.proj.2.", "head."))
INFLATE_MODES = ("average", "center")


class ConversionError(Exception):
    """Input the converter cannot use; the message says what is wrong and what to do."""


def require_torch():
    """PyTorch, which reads and writes .pth files: an optional dependency (exactly pinned, see pyproject.toml).

    Returns:
      The `torch` module.

    Raises:
      ConversionError: torch is not installed; the message says which extra installs it.
    """
    try:
        import torch
    except ImportError:
        raise ConversionError("reading and writing PyTorch checkpoints needs PyTorch: "
                              "pip install -c constraints.txt -e '.[torch]'") from None
    return torch


def load_torch_file(path: str):
    """`torch.load` without ever running pickled code (`weights_only=True`).

    Args:
      path: a PyTorch checkpoint file.

    Returns:
      What the file holds (a dict for every form).

    Raises:
      ConversionError: missing, truncated, foreign or code-carrying files, in one line.
    """
    torch = require_torch()

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except RuntimeError as e:
        if "TorchScript" not in str(e):
            raise ConversionError(f"{path} is not a readable PyTorch checkpoint: {e}") from None
        # OpenAI's CLIP files are TorchScript archives; loading one deserialises its code but runs none of it.
        return torch.jit.load(path, map_location="cpu").state_dict()
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConversionError(f"{path} is a directory, not a PyTorch checkpoint file") from None
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            found = re.search(r"GLOBAL (\S+)", str(e))
            raise ConversionError(
                f"{path} holds Python objects besides tensors ({found.group(1) if found else 'unknown type'}), "
                "which are only loadable by running pickled code. If you trust the file, save its state dict "
                "alone, e.g. torch.save(torch.load(SRC, weights_only=False)['state_dict'], OUT), "
                "and convert OUT") from None
        raise ConversionError(f"{path} is not a readable PyTorch checkpoint: {e}") from None
    except Exception as e:  # unpickling garbage raises almost any type (IndexError, KeyError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"{path} is not a readable PyTorch checkpoint (truncated, or another format): "
                              f"{first}") from None


def detect_form(checkpoint) -> str:
    """The form of a loaded checkpoint, from its container key.

    Args:
      checkpoint: what `load_torch_file` returned.

    Returns:
      A form of `FORMS`: `sensex-train` (`model_state`), `mmaction2` (`state_dict`), `imagenet` (`model`), else
      `sensex` (a flat state dict).

    Raises:
      ConversionError: the file does not hold a dict.
    """
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f"a checkpoint must be a dict; this file holds a {type(checkpoint).__name__}")
    for form, container in CONTAINERS.items():
        if container and container in checkpoint:
            return form
    return "sensex"


def _to_numpy(state_dict: Mapping) -> dict[str, np.ndarray]:
    import torch

    out, bad = {}, []
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            bad.append(f"{key} ({type(value).__name__})")
            continue
        value = value.detach()
        out[key] = (value.to(torch.float32) if value.is_floating_point() else value).numpy()
    if bad:
        raise ConversionError(f"the state dict holds entries that are not tensors: {', '.join(bad)}")
    return out


def _rename(key: str, form: str) -> str:
    key = key.removeprefix("module.")
    if form == "mmaction2":
        if key.startswith("cls_head.fc_cls."):
            return "head." + key.removeprefix("cls_head.fc_cls.")
        return key.removeprefix("backbone.")
    if form.startswith("opengvlab"):
        key = key.removeprefix("backbone.")
        for old, new in OPENGVLAB_RENAMES:
            if key.startswith(old):
                return new + key.removeprefix(old)
    return key


def has_v2_keys(keys) -> bool:
    """Whether state-dict keys are UniFormerV2's (CLIP blocks), in any form.

    Args:
      keys: state-dict keys.

    Returns:
      True when `variants.V2_KEY` is there under any prefix.
    """
    return any(isinstance(k, str) and k.endswith(V2_KEY) for k in keys)


def _clip_visual(state_dict: Mapping) -> dict | None:
    """A CLIP model's image encoder keys (`visual.` removed; the text encoder's, which share names with them, left
    out; `CLIP_DROPPED` too), or None for a state dict that is not CLIP's (no 2D `conv1`)."""
    keys = [k.removeprefix("module.") for k in state_dict]
    visual = any(k.startswith("visual.") for k in keys)
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if visual and not key.startswith("visual."):
            continue
        key = key.removeprefix("visual.")
        if key not in CLIP_DROPPED:
            out[key] = value
    stem = out.get("conv1.weight")
    return out if stem is not None and stem.dim() == 4 else None


def to_opengvlab(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This package's UniFormerV2 keys as a released OpenGVLab `.pyth` has them (`backbone.` prefix).

    Args:
      state_dict: arrays by this package's keys (`torch_keys.to_torch`'s).

    Returns:
      The same arrays by OpenGVLab key.
    """
    out = {}
    for key, value in state_dict.items():
        for old, new in OPENGVLAB_RENAMES:
            if key.startswith(new):
                key = old + key.removeprefix(new)
                break
        out["backbone." + key] = value
    return out


def read_state_dict(checkpoint, form: str | None = None) -> tuple[dict[str, np.ndarray], str]:
    """The Sense-X-keyed state dict (float32 numpy) of a loaded checkpoint, and its form.

    A 2D state dict (4-D `patch_embed1.proj.weight`) is the `imagenet` form whatever its container, since MMAction2
    also ships the ImageNet weights flat.

    Args:
      checkpoint: what `load_torch_file` returned.
      form: a form of `FORMS`; None detects it.

    Returns:
      The state dict with Sense-X keys (MMAction2's `backbone.`/`cls_head.fc_cls.` renamed), and the form.

    Raises:
      ConversionError: an unknown form, a container entry that is no state dict, entries that are not tensors,
        no weights at all, or 3D weights with `form="imagenet"`.
    """
    form = form or detect_form(checkpoint)
    if form not in FORMS:
        raise ConversionError(f"unknown checkpoint form {form!r}; choose one of {FORMS}")
    container = CONTAINERS[form]
    state_dict = checkpoint[container] if container in checkpoint else checkpoint
    if not isinstance(state_dict, Mapping):
        raise ConversionError(f"the checkpoint's {container!r} entry is a {type(state_dict).__name__}, "
                              "not a state dict")
    if not any(isinstance(k, str) and k.endswith(".weight") for k in state_dict):
        raise ConversionError(f"the checkpoint holds no model weights (entries: {sorted(map(str, state_dict))[:8]})")
    if has_v2_keys(state_dict):
        form = V2_FORMS.get(form, form)
        visual = _clip_visual(state_dict)
        if visual is not None:
            state_dict, form = visual, "clip"
    arrays = {_rename(k, form): v for k, v in _to_numpy(state_dict).items()}
    stem = arrays.get("patch_embed1.proj.weight", arrays.get("patch_embed1.proj.0.weight"))  # S/B, or XXS/XS
    if stem is not None and stem.ndim == 4:
        form = "imagenet"
    elif form == "imagenet":
        raise ConversionError("--form imagenet expects 2D weights, but the stem's first conv weight is "
                              f"{None if stem is None else stem.shape}")
    return arrays, form


def inflate(state_dict: dict[str, np.ndarray], shapes_3d: Mapping[str, tuple], mode: str = "average"
            ) -> dict[str, np.ndarray]:
    """2D ImageNet weights to 3D (Sense-X `slowfast/models/uniformer.py`, `get_pretrained_model`).

    Each 4-D conv weight whose 3D counterpart has a temporal kernel of size T becomes T copies divided by T
    (`average`, Sense-X) or the 2D kernel in the middle slice and zeros elsewhere (`center`, MMAction2). Everything
    else is copied as is.

    Args:
      state_dict: a 2D state dict, Sense-X keys.
      shapes_3d: the 3D model's state-dict shapes (`torch_keys.torch_shapes`).
      mode: `average` or `center`.

    Returns:
      The 3D state dict.

    Raises:
      ConversionError: an unknown mode.
    """
    if mode not in INFLATE_MODES:
        raise ConversionError(f"unknown inflation {mode!r}; choose one of {INFLATE_MODES}")
    out = {}
    for key, w in state_dict.items():
        target = shapes_3d.get(key)
        if w.ndim != 4 or target is None or len(target) != 5:
            out[key] = w
            continue
        t = target[2]
        if mode == "average":
            out[key] = np.repeat(w[:, :, None], t, axis=2) / np.float32(t)
        else:
            w3 = np.zeros((w.shape[0], w.shape[1], t, *w.shape[2:]), w.dtype)
            w3[:, :, t // 2] = w
            out[key] = w3
    return out


def check_finite(state_dict: Mapping[str, np.ndarray]) -> None:
    """Refuses a state dict with NaN or Inf values.

    Args:
      state_dict: numpy arrays by key.

    Raises:
      ConversionError: naming every tensor that holds a non-finite value.
    """
    bad = [k for k, v in state_dict.items() if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all()]
    if bad:
        raise ConversionError(f"non-finite values (NaN or Inf) in: {', '.join(bad)}")
