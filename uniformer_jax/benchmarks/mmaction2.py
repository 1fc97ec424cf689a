"""MMAction2's PyTorch UniFormer, the independent reference for parity tests and benchmarks.

Needs the `test` extra (torch, mmaction2, mmengine, mmcv-lite).
"""

from __future__ import annotations

import logging
import sys
import types

from uniformer_jax.models.uniformer import DEPTHS


def _stub_missing_drn():
    # The mmaction2 1.2.0 wheel lacks mmaction.models.localizers.drn (upstream issue 2714), which
    # `import mmaction.models` needs; UniFormer does not use it.
    if "mmaction.models.localizers.drn" not in sys.modules:
        package = types.ModuleType("mmaction.models.localizers.drn")
        package.__path__ = []
        module = types.ModuleType("mmaction.models.localizers.drn.drn")
        module.DRN = None
        sys.modules[package.__name__] = package
        sys.modules[module.__name__] = module


def build(variant: str = "uniformer_small", num_classes: int = 400, ln_eps: float = 1e-5,
          drop_path_rate: float = 0.0):
    """An MMAction2 Recognizer3D (UniFormer backbone + I3DHead), in eval mode, random weights.

    `ln_eps=1e-6` turns MMAction2's attention-block LayerNorms into Sense-X's, making it the Sense-X reference.

    Args:
      variant: `uniformer_small` or `uniformer_base`.
      num_classes: the head's size.
      ln_eps: LayerNorm epsilon of the attention blocks.
      drop_path_rate: stochastic depth.

    Returns:
      The PyTorch model.
    """
    _stub_missing_drn()
    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules
    from mmengine.logging import MMLogger

    register_all_modules()
    model = MODELS.build(dict(
        type="Recognizer3D",
        backbone=dict(type="UniFormer", depth=list(DEPTHS[variant]), drop_path_rate=drop_path_rate,
                      pretrained2d=False,
                      pretrained=None),
        cls_head=dict(type="I3DHead", num_classes=num_classes, in_channels=512, average_clips="prob"),
        data_preprocessor=dict(type="ActionDataPreprocessor", mean=[114.75] * 3, std=[57.375] * 3,
                               format_shape="NCTHW")))
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # init_weights logs every tensor at INFO
    model.init_weights()
    for block in [*model.backbone.blocks3, *model.backbone.blocks4]:
        block.norm1.eps = block.norm2.eps = ln_eps
    return model.eval()


def randomise_batch_stats(model, seed: int = 0):
    """Non-trivial BatchNorm running statistics, so that a conversion that drops them shows.

    Args:
      model: an MMAction2 model.
      seed: the statistics' random seed.

    Returns:
      The model, changed in place.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                module.weight.copy_(1 + 0.2 * torch.randn(n, generator=gen))
                module.bias.copy_(0.2 * torch.randn(n, generator=gen))
    return model


def logits(model, video):
    """Logits for a normalised float video through backbone and head.

    Args:
      model: an MMAction2 model.
      video: numpy (B, T, H, W, 3), normalised.

    Returns:
      numpy (B, K) logits.
    """
    import torch

    with torch.no_grad():
        x = torch.from_numpy(video).permute(0, 4, 1, 2, 3).contiguous()
        return model.cls_head(model.backbone(x)).numpy()
