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


def build_v2(variant: str = "uniformerv2_b16", num_classes: int = 400, frames: int = 8, n_layers: int = 4,
             lmhra: bool = False, double_lmhra: bool = False, temporal_downsample: bool = False):
    """MMAction2's UniFormerV2 (Recognizer3D: `UniFormerV2` backbone + `UniFormerHead`), eval mode, its own
    constructor initialisation (`clip_pretrained=False` and no `init_cfg`, as when it loads CLIP weights).

    Args:
      variant: `uniformerv2_b16`, `uniformerv2_l14` or `uniformerv2_l14_336`.
      num_classes: the head's size.
      frames: the clip length it is built for (MMAction2 fixes it; `t_size`).
      n_layers: global UniBlocks on the last `n_layers` blocks.
      lmhra: local MHRA in every block (the Something-Something models).
      double_lmhra: a second local MHRA before each block's MLP.
      temporal_downsample: the 3×p×p stem with temporal stride 2.

    Returns:
      The PyTorch model.
    """
    from uniformer_jax.models.uniformerv2 import SPECS

    _stub_missing_drn()
    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules
    from mmengine.logging import MMLogger

    spec = SPECS[variant]
    register_all_modules()
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # the backbone logs every block at INFO
    model = MODELS.build(dict(
        type="Recognizer3D",
        backbone=dict(type="UniFormerV2", input_resolution=spec.size, patch_size=spec.patch, width=spec.width,
                      layers=spec.layers, heads=spec.heads, t_size=frames, temporal_downsample=temporal_downsample,
                      no_lmhra=not lmhra, double_lmhra=double_lmhra,
                      return_list=list(range(spec.layers - n_layers, spec.layers)), n_layers=n_layers,
                      n_dim=spec.width, n_head=spec.heads, mlp_dropout=[0.5] * n_layers, clip_pretrained=False,
                      init_cfg=None),
        cls_head=dict(type="UniFormerHead", num_classes=num_classes, in_channels=spec.width, dropout_ratio=0.5,
                      average_clips="prob"),
        data_preprocessor=dict(type="ActionDataPreprocessor", mean=[114.75] * 3, std=[57.375] * 3,
                               format_shape="NCTHW")))
    return model.eval()

