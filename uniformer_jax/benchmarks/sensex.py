"""Sense-X's own lightweight UniFormer (XXS/XS) PyTorch code, imported from a checkout, for fixtures and benchmarks.

Sense-X's code is not on PyPI and is not copied here: `load(checkout)` imports its
`video_classification/slowfast/models/uniformer_light_fp32.py` and `uniformer_light_ls_fp32.py` from a clone of
github.com/Sense-X/UniFormer, with stand-ins for the little they import from SlowFast (a logger, MODEL_REGISTRY)
and timm (trunc_normal_, DropPath, to_2tuple). Needs torch.
"""

from __future__ import annotations

import collections.abc
import importlib.util
import logging
import sys
import types
from pathlib import Path
from types import SimpleNamespace

from uniformer_jax.models import light

CLASSES = {False: "Uniformer_light_fp32", True: "Uniformer_light_ls_fp32"}  # by layer scale


def _install_stand_ins(torch) -> None:
    class DropPath(torch.nn.Module):  # drop path is off wherever this module is used
        def __init__(self, p=0.0):
            super().__init__()
            if p:
                raise ValueError("the stand-in DropPath only runs with drop path 0")

        def forward(self, x):
            return x

    def module(name, **attrs):
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__dict__.update(attrs)

    module("timm")
    module("timm.models")
    module("timm.models.vision_transformer", _cfg=dict)
    module("timm.models.layers", trunc_normal_=torch.nn.init.trunc_normal_, DropPath=DropPath,
           to_2tuple=lambda x: tuple(x) if isinstance(x, collections.abc.Iterable) else (x, x))
    module("slowfast")
    module("slowfast.utils")
    module("slowfast.utils.logging", get_logger=logging.getLogger)
    module("slowfast.models", __path__=[])
    module("slowfast.models.build", MODEL_REGISTRY=SimpleNamespace(register=lambda: (lambda cls: cls)))


def load(checkout: str | Path) -> dict[bool, types.ModuleType]:
    """Sense-X's light model modules, imported from a checkout.

    Args:
      checkout: a clone of github.com/Sense-X/UniFormer.

    Returns:
      The modules by layer scale: {False: uniformer_light_fp32, True: uniformer_light_ls_fp32}.
    """
    import torch

    _install_stand_ins(torch)
    modules = {}
    for scaled, name in ((False, "uniformer_light_fp32"), (True, "uniformer_light_ls_fp32")):
        path = Path(checkout) / "video_classification/slowfast/models" / f"{name}.py"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: give a clone of github.com/Sense-X/UniFormer")
        spec = importlib.util.spec_from_file_location(f"slowfast.models.{name}", path)
        modules[scaled] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[scaled])
    return modules


def config(depth, embed_dim, head_dim, num_classes: int, crop: int, prune=None, init_value: float = 0.1):
    """The cfg the original model reads, for a model of this shape.

    Args:
      depth: blocks per stage.
      embed_dim: channels per stage.
      head_dim: channels per attention head.
      num_classes: the heads' size.
      crop: the input size.
      prune: (PRUNE_RATIO, TRADE_OFF); None: Sense-X's defaults.
      init_value: the layer scale's initial value.

    Returns:
      The cfg namespace.
    """
    prune = prune or light.default_pruning(depth)
    ratios = [[], [], list(prune[0]), list(prune[1])]
    u = SimpleNamespace(DEPTH=list(depth), EMBED_DIM=list(embed_dim), HEAD_DIM=head_dim, MLP_RATIO=[3] * 4,
                        QKV_BIAS=True, QKV_SCALE=None, REPRESENTATION_SIZE=None, DROPOUT_RATE=0.0,
                        ATTENTION_DROPOUT_RATE=0.0, DROP_DEPTH_RATE=0.0, SPLIT=False, STD=False, PRUNE_RATIO=ratios,
                        TRADE_OFF=ratios, INIT_VALUE=init_value)
    return SimpleNamespace(UNIFORMER=u, MODEL=SimpleNamespace(NUM_CLASSES=num_classes),
                           DATA=SimpleNamespace(TRAIN_CROP_SIZE=crop, INPUT_CHANNEL_NUM=[3]))


def build(modules, variant: str, num_classes: int = 400, crop: int = 160):
    """The original model of a full-size variant (`uniformer_xxs`, `uniformer_xs_ls`, ...).

    Args:
      modules: what `load` returned.
      variant: a light variant.
      num_classes: the heads' size.
      crop: the input size.

    Returns:
      The PyTorch model.
    """
    spec = light.SPECS[variant]
    scaled = spec.layer_scale is not None
    cfg = config(spec.depth, spec.embed_dim, spec.head_dim, num_classes, crop, init_value=spec.layer_scale or 0.1)
    return getattr(modules[scaled], CLASSES[scaled])(cfg)


def randomise(model, generator) -> None:
    """Every parameter and BatchNorm statistic of an original model random, in place.

    Of a size that keeps activations in range, so that no term of the forward pass hides; unlike the default
    init, the class token's attention then ranks tokens clearly (near-equal scores would make which tokens are kept
    depend on rounding).

    Args:
      model: an original light model.
      generator: a `torch.Generator`.
    """
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gamma" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=generator))
            elif p.ndim == 1 and ("norm" in name or ".proj.1." in name or ".proj.4." in name):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=generator))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=generator) / max(1, p[0].numel()) ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=generator))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=generator))
