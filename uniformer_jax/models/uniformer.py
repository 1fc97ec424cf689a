"""UniFormer video models (Li et al., ICLR 2022) in Flax Linen.

The module tree mirrors Sense-X's `video_classification/slowfast/models/uniformer.py`: every submodule carries the
name of its PyTorch counterpart (`patch_embed1/proj`, `blocks1_0/attn`, `blocks3_0/attn/qkv`, `norm`, `head`), so a
PyTorch state dict maps onto the Flax variables by renaming and transposing alone. Video is channels-last,
`(B, T, H, W, 3)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from uniformer_jax.models.layers import (
    MLP_RATIO,
    Attention,
    CBlock,
    DepthwiseConv,
    DropPath,
    Mlp,
    PatchEmbed,
    check_remat,
    drop_path_rates,
    linear_init,
    probe,
)

EMBED_DIM = (64, 128, 320, 512)
HEAD_DIM = 64
DEPTHS = {  # blocks per stage of each variant
    "uniformer_small": (3, 4, 8, 3),
    "uniformer_base": (5, 8, 20, 7),
}
ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn")


class SABlock(nn.Module):
    """Global MHRA block of stages 3-4: joint space-time self-attention."""

    num_heads: int
    drop_path: float = 0.0
    ln_eps: float = 1e-6
    attention: str = "xla"
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        drop = DropPath(self.drop_path, name="drop_path")
        x = x + DepthwiseConv(3, dtype=self.dtype, name="pos_embed")(x)
        shape = x.shape
        x = x.reshape(shape[0], -1, c)
        y = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm1")(x)
        x = x + drop(Attention(self.num_heads, self.attention, dtype=self.dtype, name="attn")(y),
                     deterministic=not train)
        y = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm2")(x)
        x = x + drop(Mlp(MLP_RATIO * c, dtype=self.dtype, name="mlp")(y), deterministic=not train)
        return x.reshape(shape)


class UniFormer(nn.Module):
    """UniFormer for video classification.

    Attributes:
      depth: blocks per stage; (3, 4, 8, 3) is UniFormer-S, (5, 8, 20, 7) UniFormer-B.
      num_classes: rows of the linear head.
      drop_path_rate: stochastic depth, linearly spaced from 0 over all blocks.
      ln_eps: LayerNorm epsilon in the attention blocks: 1e-6 in Sense-X, 1e-5 in MMAction2.
      dtype: computation dtype (e.g. bfloat16); parameters stay float32 and logits are returned as float32.
      attention: 'xla', or 'cudnn' for cuDNN flash attention (GPU, bfloat16/float16 only).
      remat: how many leading blocks of each stage to rematerialise, like the original `CHECKPOINT_NUM`.
      frozen_stages: leading stages that run as in evaluation even in training (BatchNorm running statistics,
        no drop path), for fine-tuning with those stages frozen (`train.freeze=stages:N`).
    """

    depth: tuple[int, int, int, int] = DEPTHS["uniformer_small"]
    num_classes: int = 400
    drop_path_rate: float = 0.0
    ln_eps: float = 1e-6
    dtype: Any = None
    attention: str = "xla"
    remat: tuple[int, int, int, int] = (0, 0, 0, 0)
    frozen_stages: int = 0

    def setup(self):
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {self.attention!r}")
        if len(self.depth) != 4 or len(self.remat) != 4:
            raise ValueError(f"depth and remat need one entry per stage, got {self.depth} and {self.remat}")
        check_remat(self.remat, self.depth)
        dpr = drop_path_rates(self.drop_path_rate, self.depth)
        self.patch_embed1 = PatchEmbed(EMBED_DIM[0], (3, 4, 4), (2, 4, 4), (1, 0, 0), dtype=self.dtype)
        self.patch_embed2 = PatchEmbed(EMBED_DIM[1], (1, 2, 2), (1, 2, 2), dtype=self.dtype)
        self.patch_embed3 = PatchEmbed(EMBED_DIM[2], (1, 2, 2), (1, 2, 2), dtype=self.dtype)
        self.patch_embed4 = PatchEmbed(EMBED_DIM[3], (1, 2, 2), (1, 2, 2), dtype=self.dtype)
        stages = []
        for s, n in enumerate(self.depth):
            first = sum(self.depth[:s])
            blocks = []
            for i in range(n):
                cls = CBlock if s < 2 else SABlock
                if i < self.remat[s]:
                    cls = nn.remat(cls, static_argnums=(2,))
                kwargs = {} if s < 2 else dict(num_heads=EMBED_DIM[s] // HEAD_DIM, ln_eps=self.ln_eps,
                                               attention=self.attention)
                blocks.append(cls(drop_path=dpr[first + i], dtype=self.dtype, **kwargs))
            stages.append(blocks)
        self.blocks1, self.blocks2, self.blocks3, self.blocks4 = stages
        self.norm = nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype)
        self.head = nn.Dense(self.num_classes, kernel_init=linear_init)

    def features(self, x, train: bool = False):
        """Per-stage feature maps (`stage1`..`stage4`, after the final norm for `stage4`) and `pooled`; each map is a
        `layers.probe` of its name."""
        x = jnp.asarray(x, self.dtype)
        maps = {}
        embeds = (self.patch_embed1, self.patch_embed2, self.patch_embed3, self.patch_embed4)
        stages = (self.blocks1, self.blocks2, self.blocks3, self.blocks4)
        for s, (embed, blocks) in enumerate(zip(embeds, stages, strict=True)):
            x = embed(x)
            for block in blocks:
                x = block(x, train and s >= self.frozen_stages)
            if s < 3:
                maps[f"stage{s + 1}"] = x = probe(self, f"stage{s + 1}", x)
        x = self.norm(x, use_running_average=not train)
        maps["stage4"] = x = probe(self, "stage4", x)
        maps["pooled"] = jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))
        return maps

    def classify(self, maps: dict, train: bool = False):
        """Logits (float32) from `features`' maps.

        Args:
          maps: `features`' result.
          train: training mode (the same head either way).

        Returns:
          The head's logits (B, num_classes).
        """
        del train
        return self.head(maps["pooled"])

    def __call__(self, x, train: bool = False):
        """Logits (float32) for normalised float video `(B, T, H, W, 3)`."""
        return self.classify(self.features(x, train), train)


def flops(depth: Sequence[int], frames: int, size: int = 224, num_classes: int = 400) -> int:
    """Forward FLOPs of one clip as fvcore counts them (the paper's figures).

    One per multiply-accumulate of the convolutions, linear layers and attention products, 5 per LayerNorm and 2 per
    BatchNorm element (eval mode); activations, softmax and additions are not counted.

    Args:
      depth: blocks per stage (`DEPTHS`).
      frames: the clip's frame count.
      size: the clip's height and width.
      num_classes: the head's size.

    Returns:
      The FLOP count.
    """
    t, h = frames // 2, size // 4
    total = t * h * h * EMBED_DIM[0] * (3 * 4 * 4 * 3 + 5)  # patch_embed1 and its LayerNorm
    for s, (blocks, c) in enumerate(zip(depth, EMBED_DIM, strict=True)):
        if s:
            h //= 2
            total += t * h * h * c * (EMBED_DIM[s - 1] * 4 + 5)
        n = t * h * h
        if s < 2:  # pos_embed 3^3, conv1, attn 5^3, conv2, mlp, 2 BatchNorms
            block = n * c * (27 + 2 * c + 125 + 2 * MLP_RATIO * c + 2 * 2)
        else:  # pos_embed 3^3, qkv, q.k and attn.v over all n tokens, proj, mlp, 2 LayerNorms
            block = n * c * (27 + 4 * c + 2 * n + 2 * MLP_RATIO * c + 2 * 5)
        total += blocks * block
    return total + n * EMBED_DIM[-1] * 2 + EMBED_DIM[-1] * num_classes
