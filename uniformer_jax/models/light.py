"""The lightweight UniFormer-XXS and -XS video models, with Evo-ViT token pruning, in Flax Linen.

Mirrors Sense-X's `video_classification/slowfast/models/uniformer_light_fp32.py` (and `_ls_fp32`, which adds
layer scale): a two-conv BatchNorm stem, CBlocks with MLP ratio 3 in stages 1-2, and `EvoSABlock`s with a class
token in stages 3-4. The original threads the pruning state through module globals; here each block takes and
returns it: `score`, the class token's attention to every patch token averaged over heads and carried from block
to block (the original's `global_attn`). A pruning block keeps the `int(N * prune_ratio)` tokens with the highest
score, merges the rest into one score-weighted token, runs attention and MLP on the kept tokens, the class token
and the merged one, adds the merged token's update to every dropped token (the "fast path") and puts the tokens
back in their order. The kept count is fixed at trace time, so shapes are static under `jit`. Attention runs in
float32 whatever `dtype`, as the `_fp32` originals force it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from uniformer_jax.models.layers import (
    CBlock,
    DepthwiseConv,
    DropPath,
    Mlp,
    PatchEmbed,
    check_remat,
    conv,
    drop_path_rates,
    gelu,
    layer_scales,
    linear_init,
    probe,
    scaled,
)
from uniformer_jax.models.thin_conv import ThinConv


@dataclasses.dataclass(frozen=True)
class Spec:
    depth: tuple[int, int, int, int]
    embed_dim: tuple[int, int, int, int]
    head_dim: int
    layer_scale: float | None  # the `_ls` variants' INIT_VALUE; None: no layer scale


XXS = dict(depth=(2, 5, 8, 2), embed_dim=(56, 112, 224, 448), head_dim=28)
XS = dict(depth=(3, 5, 9, 3), embed_dim=(64, 128, 256, 512), head_dim=32)
SPECS = {
    "uniformer_xxs": Spec(**XXS, layer_scale=None),
    "uniformer_xxs_ls": Spec(**XXS, layer_scale=0.1),
    "uniformer_xs": Spec(**XS, layer_scale=None),
    "uniformer_xs_ls": Spec(**XS, layer_scale=0.1),
}
MLP_RATIO = 3


def default_pruning(depth) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Sense-X's PRUNE_RATIO (and TRADE_OFF) for stages 3-4.

    The first stage-3 block keeps every token and starts the score; every later block keeps half.

    Args:
      depth: blocks per stage.

    Returns:
      The ratios of stage 3's blocks and of stage 4's.
    """
    return (1.0,) + (0.5,) * (depth[2] - 1), (0.5,) * depth[3]


class Stem(nn.Module):
    """`patch_embed1.proj`: Conv3d 3^3 stride (1, 2, 2), BatchNorm, GELU, Conv3d 3^3 stride 2, BatchNorm.

    The first conv, over RGB, is a `ThinConv` (XLA's CPU convolution is slow on 3 channels).
    """

    dim: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        bn = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                               dtype=self.dtype)
        x = ThinConv(self.dim // 2, (3, 3, 3), (1, 2, 2), (1, 1, 1), dtype=self.dtype, name="proj_0")(x)
        x = gelu(bn(name="proj_1")(x))
        x = conv(self.dim, (3, 3, 3), self.dim // 2, stride=2, padding=1, name="proj_3", dtype=self.dtype)(x)
        return bn(name="proj_4")(x)


class Attention(nn.Module):
    """Self-attention that also returns the class token's (token 0's) attention to the others, head-averaged."""

    num_heads: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        b, n, c = x.shape
        hd = c // self.num_heads
        qkv = nn.Dense(3 * c, kernel_init=linear_init, dtype=self.dtype, name="qkv")(x)
        q, k, v = jnp.unstack(qkv.reshape(b, n, 3, self.num_heads, hd).astype(jnp.float32), axis=2)
        attn = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) * hd ** -0.5, axis=-1)
        y = jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b, n, c)
        y = nn.Dense(c, kernel_init=linear_init, dtype=self.dtype, name="proj")(y.astype(x.dtype))
        return y, attn[:, :, 0, 1:].mean(axis=1)


def _take(x, order):
    """x (B, N, ...) reordered along N by order (B, N)."""
    # top_k's indices are in bounds: no wrapping of negative ones (in LiteRT those ops split XNNPACK's graph).
    order = order.reshape(order.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, order, axis=1, mode="promise_in_bounds")


class EvoSABlock(nn.Module):
    """Global attention block with a class token and, for `prune_ratio` < 1, Evo-ViT token pruning."""

    num_heads: int
    prune_ratio: float = 1.0
    trade_off: float = 1.0
    downsample: bool = False  # pool the score 2x2 for the next stage (the last stage-3 block)
    drop_path: float = 0.0
    layer_scale: float | None = None
    ln_eps: float = 1e-6
    dtype: Any = None

    @nn.compact
    def __call__(self, cls, x, score, train: bool = False):
        """cls (B, 1, C), x (B, T, H, W, C), score (B, T*H*W) or None before the first block.

        Returns cls, x and the score; `order` (each pruning block's token ranking) is sown as an intermediate.
        """
        c = x.shape[-1]
        gamma = layer_scales(self, (c,))
        drop = DropPath(self.drop_path, name="drop_path")
        norm1 = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm1")
        norm2 = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm2")
        attn = Attention(self.num_heads, dtype=self.dtype, name="attn")
        mlp = Mlp(MLP_RATIO * c, dtype=self.dtype, name="mlp")
        x = x + DepthwiseConv(3, dtype=self.dtype, name="pos_embed")(x)
        shape = x.shape
        x = x.reshape(shape[0], -1, c)
        n = x.shape[1]
        if self.prune_ratio == 1:
            tokens = jnp.concatenate([cls.astype(x.dtype), x], axis=1)
            y, cls_attn = attn(norm1(tokens))
            tokens = tokens + drop(scaled(y, gamma[0]), deterministic=not train)
            tokens = tokens + drop(scaled(mlp(norm2(tokens)), gamma[1]), deterministic=not train)
            score = cls_attn if score is None else (1 - self.trade_off) * score + self.trade_off * cls_attn
            return tokens[:, :1], tokens[:, 1:].reshape(shape), score
        if score is None:
            raise ValueError("a pruning block needs the score of an earlier block; the first stage-3 block must "
                             "have prune_ratio 1")
        kept = int(n * self.prune_ratio)
        # A full-length top_k, not argsort: the same order (ties to the lower index), and a sort is what
        # LiteRT's converter cannot take (python -m uniformer_jax.export).
        order = lax.top_k(score, n)[1]
        self.sow("intermediates", "order", order)
        x, score = _take(x, order), _take(score, order)
        dropped = x[:, kept:]
        weight = (score[:, kept:] / score[:, kept:].sum(axis=1, keepdims=True))[..., None]
        merged = (weight * dropped).sum(axis=1, keepdims=True).astype(x.dtype)
        tokens = jnp.concatenate([cls.astype(x.dtype), x[:, :kept], merged], axis=1)
        y, cls_attn = attn(norm1(tokens))
        # A concatenation, not a scatter (`.at[].set`): tf2onnx reads no scatter from a LiteRT file.
        score = jnp.concatenate([(1 - self.trade_off) * score[:, :kept] + self.trade_off * cls_attn[:, :-1],
                                 score[:, kept:]], axis=1)
        tokens = tokens + drop(scaled(y, gamma[0]), deterministic=not train)
        fast = scaled(y[:, -1:], gamma[0])
        y = mlp(norm2(tokens))
        tokens = tokens + drop(scaled(y, gamma[1]), deterministic=not train)
        fast = fast + scaled(y[:, -1:], gamma[1])
        x = jnp.concatenate([tokens[:, 1:-1], dropped + fast], axis=1)
        total = score.sum(axis=1, keepdims=True)
        restore = lax.top_k(-order, n)[1]  # the inverse permutation: ascending order values
        x, score = _take(x, restore), _take(score, restore)
        if self.downsample:
            b, t, h, w = shape[:4]
            # AvgPool3d((1, 2, 2)): an odd last row or column is left out, as patch_embed4's stride-2 conv does.
            score = score.reshape(b, t, h, w)[:, :, :h // 2 * 2, :w // 2 * 2]
            score = score.reshape(b, t, h // 2, 2, w // 2, 2).mean(axis=(3, 5)).reshape(b, -1)
            score = score * (total / score.sum(axis=1, keepdims=True))
        return tokens[:, :1], x.reshape(shape), score


class UniFormerLight(nn.Module):
    """UniFormer-XXS/XS for video classification.

    Attributes (besides those `uniformer_jax.models.uniformer.UniFormer` shares: num_classes, drop_path_rate, ln_eps,
    dtype, remat):
      depth, embed_dim, head_dim: the variant's shape (see SPECS).
      layer_scale: the `_ls` variants' initial `gamma`, None for none.
      prune_ratio, trade_off: per block of stages 3 and 4; None: Sense-X's defaults (`default_pruning`).
      frozen_stages: leading stages that run as in evaluation even in training (`UniFormer.frozen_stages`).
    In training mode the model returns the logits of `head` (over the pooled final feature map) and of
    `head_cls` (over the class token), which the original's loss averages; in eval mode, `head`'s alone.
    """

    depth: tuple[int, int, int, int] = SPECS["uniformer_xxs"].depth
    embed_dim: tuple[int, int, int, int] = SPECS["uniformer_xxs"].embed_dim
    head_dim: int = SPECS["uniformer_xxs"].head_dim
    layer_scale: float | None = None
    prune_ratio: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    trade_off: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    num_classes: int = 400
    drop_path_rate: float = 0.0
    ln_eps: float = 1e-6
    dtype: Any = None
    attention: str = "xla"
    remat: tuple[int, int, int, int] = (0, 0, 0, 0)
    frozen_stages: int = 0

    def setup(self):
        if self.attention != "xla":
            raise ValueError("the lightweight models need the attention probabilities for token pruning: "
                             f"attention must be 'xla', got {self.attention!r}")
        prune = self.prune_ratio or default_pruning(self.depth)
        trade = self.trade_off or default_pruning(self.depth)
        if [len(p) for p in (*prune, *trade)] != [*self.depth[2:], *self.depth[2:]] or self.depth[2] < 2:
            raise ValueError(f"prune_ratio and trade_off need one entry per block of stages 3-4 {self.depth[2:]}, "
                             f"and stage 3 at least 2 blocks; got {prune} and {trade}")
        if prune[0][0] != 1 or prune[0][-1] == 1:
            raise ValueError(f"the first stage-3 block must keep every token and the last prune (it pools the score "
                             f"for stage 4); got prune_ratio {prune}")
        check_remat(self.remat, self.depth)
        dims, dpr = self.embed_dim, drop_path_rates(self.drop_path_rate, self.depth)
        self.patch_embed1 = Stem(dims[0], dtype=self.dtype)
        self.patch_embed2, self.patch_embed3, self.patch_embed4 = (
            PatchEmbed(d, (1, 2, 2), (1, 2, 2), dtype=self.dtype) for d in dims[1:])
        stages = []
        for s, n in enumerate(self.depth):
            first, blocks = sum(self.depth[:s]), []
            for i in range(n):
                common = dict(drop_path=dpr[first + i], layer_scale=self.layer_scale, dtype=self.dtype)
                if s < 2:
                    cls = nn.remat(CBlock, static_argnums=(2,)) if i < self.remat[s] else CBlock
                    blocks.append(cls(mlp_ratio=MLP_RATIO, **common))
                else:
                    cls = nn.remat(EvoSABlock, static_argnums=(4,)) if i < self.remat[s] else EvoSABlock
                    blocks.append(cls(num_heads=dims[s] // self.head_dim, prune_ratio=prune[s - 2][i],
                                      trade_off=trade[s - 2][i], downsample=s == 2 and i == n - 1,
                                      ln_eps=self.ln_eps, **common))
            stages.append(blocks)
        self.blocks1, self.blocks2, self.blocks3, self.blocks4 = stages
        self.cls_token = self.param("cls_token", nn.initializers.zeros, (1, 1, dims[2]))
        self.cls_upsample = nn.Dense(dims[3], kernel_init=linear_init, dtype=self.dtype)
        self.norm = nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype)
        self.norm_cls = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype)
        self.head = nn.Dense(self.num_classes, kernel_init=linear_init)
        self.head_cls = nn.Dense(self.num_classes, kernel_init=linear_init)

    def features(self, x, train: bool = False):
        """Per-stage feature maps (`stage4` after the final norm), `pooled`, and the class token `cls`."""
        x = jnp.asarray(x, self.dtype)
        maps = {}
        stage_train = [train and s >= self.frozen_stages for s in range(4)]
        x = self.patch_embed1(x, stage_train[0])
        for block in self.blocks1:
            x = block(x, stage_train[0])
        maps["stage1"] = x = probe(self, "stage1", x)
        x = self.patch_embed2(x)
        for block in self.blocks2:
            x = block(x, stage_train[1])
        maps["stage2"] = x = probe(self, "stage2", x)
        x = self.patch_embed3(x)
        cls, score = jnp.broadcast_to(self.cls_token, (x.shape[0], 1, x.shape[-1])), None
        for block in self.blocks3:
            cls, x, score = block(cls, x, score, stage_train[2])
        maps["stage3"] = x = probe(self, "stage3", x)
        cls = self.cls_upsample(cls)
        x = self.patch_embed4(x)
        for block in self.blocks4:
            cls, x, score = block(cls, x, score, stage_train[3])
        x = self.norm(x, use_running_average=not train)
        self.sow("intermediates", "score", score)
        maps["stage4"] = x = probe(self, "stage4", x)
        maps["cls"] = cls[:, 0]
        maps["pooled"] = jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))
        return maps

    def classify(self, maps: dict, train: bool = False):
        """Logits (float32) from `features`' maps.

        Args:
          maps: `features`' result.
          train: training mode: both heads' logits.

        Returns:
          `head`'s logits (B, num_classes); in training, those of (head, head_cls).
        """
        logits = self.head(maps["pooled"])
        if not (train or self.is_initializing()):
            return logits
        cls_logits = self.head_cls(self.norm_cls(maps["cls"]).astype(jnp.float32))
        return (logits, cls_logits) if train else logits

    def __call__(self, x, train: bool = False):
        """Logits (float32) for normalised float video `(B, T, H, W, 3)`; in training, (head, head_cls)."""
        return self.classify(self.features(x, train), train)


def flops(spec: Spec, frames: int, size: int, num_classes: int = 400) -> int:
    """Forward FLOPs of one clip in eval mode as fvcore counts them, pruning included.

    A pruning block's attention and MLP see the kept tokens, the class token and the merged one (see
    `uniformer_jax.models.uniformer.flops` for what is counted).

    Args:
      spec: the variant's shape (`SPECS`).
      frames: the clip's frame count.
      size: the clip's height and width.
      num_classes: the heads' size.

    Returns:
      The FLOP count.
    """
    c0, (t, h, w) = spec.embed_dim[0], (frames, size // 2, size // 2)
    total = t * h * w * c0 // 2 * (3 * 27 + 2)  # proj_0 and its BatchNorm
    t, h, w = (t + 1) // 2, h // 2, w // 2
    total += t * h * w * c0 * (c0 // 2 * 27 + 2)  # proj_3 and its BatchNorm
    prune = default_pruning(spec.depth)
    for s, (blocks, c) in enumerate(zip(spec.depth, spec.embed_dim, strict=True)):
        if s:
            h, w = h // 2, w // 2
            total += t * h * w * c * (spec.embed_dim[s - 1] * 4 + 5)
        n = t * h * w
        for i in range(blocks):
            if s < 2:  # pos_embed 3^3, conv1, attn 5^3, conv2, mlp, 2 BatchNorms
                total += n * c * (27 + 2 * c + 125 + 2 * MLP_RATIO * c + 2 * 2)
                continue
            ratio = prune[s - 2][i]
            m = n + 1 if ratio == 1 else int(n * ratio) + 2  # tokens through attention and MLP
            total += n * c * 27 + m * c * (4 * c + 2 * m + 2 * MLP_RATIO * c + 2 * 5)
        if s == 2:
            total += spec.embed_dim[2] * spec.embed_dim[3]  # cls_upsample
    return total + n * spec.embed_dim[3] * 2 + spec.embed_dim[3] * num_classes
