"""UniFormerV2 (ICCV 2023): a CLIP image ViT armed with local temporal MHRA and global UniBlocks.

Mirrors OpenGVLab/UniFormerV2 `slowfast/models/uniformerv2_model.py` and MMAction2's
`mmaction/models/backbones/uniformerv2.py` (the same network; parameters named after MMAction2's modules, the
classifier `head` as in the v1 models). Channels-last: the video is `(B, T, H, W, 3)`; the backbone's tokens are
`(B·T', 1+L, C)`, one sequence a frame (`T'` frames after the patch embedding, `L` patches a frame); the number of
frames is read from the input, so one model runs any clip length.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen import dtypes

from uniformer_jax.models import backends
from uniformer_jax.models.layers import (
    DepthwiseConv,
    conv,
    conv_bias_init,
    conv_kernel_init,
    drop_path,
    linear_init,
    probe,
    sow_attention,
)

LN_EPS = 1e-5
MLP_FACTOR = 4
DW_REDUCTION = 1.5  # LMHRA's channel reduction: C' = int(C // 1.5)
HEAD_DIM = 64
ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn")
# torch.nn.MultiheadAttention's in_proj init, also the extractors' c_fc (PyTorch's Linear default is
# `conv_kernel_init`, U(±1/sqrt(fan_in)), and `conv_bias_init`).
xavier = nn.initializers.xavier_uniform()
zeros = nn.initializers.zeros


@dataclasses.dataclass(frozen=True)
class Spec:
    """A CLIP image encoder's shape: patch size, width, depth and input size (the positional table's)."""

    patch: int
    width: int
    layers: int
    size: int

    @property
    def heads(self) -> int:
        return self.width // HEAD_DIM


SPECS = {
    "uniformerv2_b16": Spec(16, 768, 12, 224),
    "uniformerv2_l14": Spec(14, 1024, 24, 224),
    "uniformerv2_l14_336": Spec(14, 1024, 24, 336),
}


def quick_gelu(x):
    """CLIP's activation (not GELU in either form).

    Args:
      x: any array.

    Returns:
      `x·σ(1.702x)`, shaped and typed as `x`.
    """
    return x * jax.nn.sigmoid(1.702 * x)


class MultiheadAttention(nn.Module):
    """torch.nn.MultiheadAttention's parameters (packed `in_proj_weight` rows [q; k; v], `out_proj`), no dropout.

    `zero_out`: the extractors' zero-initialised output projection; `implementation` as
    `jax.nn.dot_product_attention`'s.
    """

    num_heads: int
    implementation: str = "xla"
    zero_out: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, q, kv):
        c = q.shape[-1]
        w = self.param("in_proj_weight", xavier, (3 * c, c))
        b = self.param("in_proj_bias", zeros, (3 * c,))
        q, kv, w, b = dtypes.promote_dtype(q, kv, w, b, dtype=self.dtype)
        hd = c // self.num_heads

        def project(x, i):
            y = x @ w[i * c:(i + 1) * c].T + b[i * c:(i + 1) * c]
            return y.reshape(*x.shape[:-1], self.num_heads, hd)

        q, k = project(q, 0), project(kv, 1)
        sow_attention(self, q, k, hd ** -0.5)
        x = jax.nn.dot_product_attention(q, k, project(kv, 2), scale=hd ** -0.5, implementation=self.implementation)
        return nn.Dense(c, kernel_init=zeros if self.zero_out else conv_kernel_init, bias_init=zeros,
                        dtype=self.dtype, name="out_proj")(x.reshape(*x.shape[:-2], c))


class Mlp(nn.Module):
    """`c_fc` → QuickGELU → (dropout) → `c_proj`, PyTorch Linear initialisation unless the extractor's."""

    hidden: int
    dropout: float = 0.0
    extractor: bool = False  # xavier c_fc, zero c_proj (OG L154-159)
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        x = nn.Dense(self.hidden, kernel_init=xavier if self.extractor else conv_kernel_init,
                     bias_init=conv_bias_init(c), dtype=self.dtype, name="c_fc")(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(quick_gelu(x))
        return nn.Dense(c, kernel_init=zeros if self.extractor else conv_kernel_init,
                        bias_init=zeros if self.extractor else conv_bias_init(self.hidden), dtype=self.dtype,
                        name="c_proj")(x)


def _layer_norm(name: str, dtype) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, name=name)


class LocalMHRA(nn.Module):
    """Local temporal relation aggregation on patch tokens `(B, T', h, w, C)`: BatchNorm, 1×1×1 reduce, depthwise
    3×1×1 temporal conv, 1×1×1 expand (zero-initialised, so that the block starts as the identity)."""

    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        reduced = int(c // DW_REDUCTION)
        y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                         name="pos_embed_0")(x)
        y = conv(reduced, (1, 1, 1), c, name="pos_embed_1", dtype=self.dtype)(y)
        y = DepthwiseConv((3, 1, 1), dtype=self.dtype, name="pos_embed_2")(y)
        return nn.Conv(c, (1, 1, 1), kernel_init=zeros, bias_init=zeros, dtype=self.dtype, name="pos_embed_3",
                       conv_general_dilated=backends.conv_general_dilated)(y)


class ResidualAttentionBlock(nn.Module):
    """CLIP's block (per-frame self-attention over 1+L tokens, QuickGELU MLP), with local MHRA on the patch tokens
    before the attention and, with `double_lmhra`, again before the MLP (the "local UniBlock")."""

    num_heads: int
    drop_path: float = 0.0
    lmhra: bool = False
    double_lmhra: bool = False
    attention: str = "xla"
    dtype: Any = None

    def _local(self, name: str, z, frames: int, train: bool):
        bt, n, c = z.shape
        side = math.isqrt(n - 1)
        patches = z[:, 1:].reshape(bt // frames, frames, side, side, c)
        y = LocalMHRA(dtype=self.dtype, name=name)(patches, train)
        # Stochastic depth along dim 0 of what PyTorch's DropPath gets (spec pitfall 2): whole videos here, token
        # positions in the attention and MLP branches, the whole batch in the extractors.
        patches = patches + drop_path(self, y, self.drop_path, (bt // frames, 1, 1, 1, 1), not train)
        return jnp.concatenate([z[:, :1], patches.reshape(bt, n - 1, c)], axis=1)

    @nn.compact
    def __call__(self, z, frames: int, train: bool = False):
        n = z.shape[1]
        if self.lmhra:
            z = self._local("lmhra1", z, frames, train)
        y = _layer_norm("ln_1", self.dtype)(z)
        y = MultiheadAttention(self.num_heads, self.attention, dtype=self.dtype, name="attn")(y, y)
        z = z + drop_path(self, y, self.drop_path, (1, n, 1), not train)
        if self.lmhra and self.double_lmhra:
            z = self._local("lmhra2", z, frames, train)
        y = Mlp(MLP_FACTOR * z.shape[-1], dtype=self.dtype, name="mlp")(_layer_norm("ln_2", self.dtype)(z))
        return z + drop_path(self, y, self.drop_path, (1, n, 1), not train)


class Extractor(nn.Module):
    """The global UniBlock's cross-attention: the video token `(B, C)` queries the frames' tokens `(B, T'·(1+L), C)`,
    then an MLP with dropout; both start as the identity (zero output projections)."""

    num_heads: int
    dropout: float = 0.5
    drop_path: float = 0.0
    dtype: Any = None

    @nn.compact
    def __call__(self, cls, kv, train: bool = False):
        q = _layer_norm("ln_1", self.dtype)(cls)[:, None]
        kv = _layer_norm("ln_3", self.dtype)(kv)
        y = MultiheadAttention(self.num_heads, zero_out=True, dtype=self.dtype, name="attn")(q, kv)[:, 0]
        cls = cls + drop_path(self, y, self.drop_path, (1, 1), not train)
        y = Mlp(MLP_FACTOR * cls.shape[-1], self.dropout, extractor=True, dtype=self.dtype,
                name="mlp")(_layer_norm("ln_2", self.dtype)(cls), train)
        return cls + drop_path(self, y, self.drop_path, (1, 1), not train)


class Transformer(nn.Module):
    """The backbone's blocks, the global UniBlocks reading the last `n_layers` of them, and the fusion of the video
    token with the frames' class tokens (`balance`; absent in `frozen` models, whose feature is the video token)."""

    width: int
    layers: int
    num_heads: int
    n_layers: int = 4
    lmhra: bool = False
    double_lmhra: bool = False
    frozen: bool = False
    backbone_drop_path_rate: float = 0.0
    drop_path_rate: float = 0.0
    mlp_dropout: float = 0.5
    attention: str = "xla"
    remat: int = 0
    dtype: Any = None

    @nn.compact
    def __call__(self, z, frames: int, train: bool = False):
        bt, n, c = z.shape
        b, side = bt // frames, math.isqrt(n - 1)
        cls = jnp.broadcast_to(self.param("temporal_cls_token", zeros, (1, 1, c))[0],
                               (b, c)).astype(z.dtype)
        first = self.layers - self.n_layers
        block_rates = _linspace(self.backbone_drop_path_rate, self.layers)
        global_rates = _linspace(self.drop_path_rate, self.n_layers)
        recomputed = nn.remat(ResidualAttentionBlock, static_argnums=(2, 3))
        tokens = []
        for i in range(self.layers):
            block = recomputed if i < self.remat else ResidualAttentionBlock
            z = block(self.num_heads, block_rates[i], self.lmhra, self.double_lmhra, self.attention, self.dtype,
                      name=f"resblocks_{i}")(z, frames, train)
            z = probe(self, f"layer{i + 1}", z)
            tokens.append(z)
            if i >= first:
                j = i - first
                f = z.reshape(b, frames, n, c)
                patches = f[:, :, 1:].reshape(b, frames, side, side, c)
                patches = patches + DepthwiseConv(3, bias_init=zeros, dtype=self.dtype, name=f"dpe_{j}")(patches)
                kv = jnp.concatenate([f[:, :, :1], patches.reshape(b, frames, n - 1, c)], axis=2)
                cls = Extractor(self.num_heads, self.mlp_dropout, global_rates[j], self.dtype,
                                name=f"dec_{j}")(cls, kv.reshape(b, frames * n, c), train)
        if self.frozen:
            feature = cls
        else:
            weight = jax.nn.sigmoid(self.param("balance", zeros, (c,))).astype(z.dtype)
            residual = jnp.mean(z[:, 0].reshape(b, frames, c), axis=1)
            feature = (1 - weight) * cls + weight * residual
        return _layer_norm("norm", self.dtype)(feature), tokens


def _linspace(rate: float, n: int) -> list[float]:
    """torch.linspace(0, rate, n) as floats: each block's stochastic depth."""
    return [float(r) for r in np.linspace(0.0, rate, n, dtype=np.float32)]


class UniFormerV2(nn.Module):
    """UniFormerV2 for video classification.

    Attributes:
      patch: patch size (16 for B/16, 14 for L/14).
      width: channels of the CLIP encoder (768, 1024).
      layers: its blocks (12, 24).
      size: the input height and width its positional embedding is for (224, or 336 for L/14@336); inputs must
        have it, as in both originals (neither interpolates the table).
      num_classes: rows of the linear head.
      n_layers: global UniBlocks, reading the last `n_layers` blocks (4 for Kinetics, MiT; 8 or 16 for Sth).
      lmhra: local MHRA in every block (Sth); `double_lmhra`: a second one before the MLP.
      temporal_downsample: a 3×p×p stem with temporal stride 2 (Sth) instead of 1×p×p.
      frozen: the frozen-backbone models (no `balance`; the feature is the video token alone).
      backbone_drop_path_rate, drop_path_rate: stochastic depth of the blocks and of the global UniBlocks.
      mlp_dropout: dropout in the global UniBlocks' MLP (0.5); `head_dropout`: before the head (0.5).
      dtype: computation dtype; parameters stay float32 and logits are returned as float32.
      attention: 'xla', or 'cudnn' for cuDNN flash attention in the blocks (GPU, bfloat16/float16 only).
      remat: how many leading blocks to rematerialise in training (the original's `checkpoint_num`).
    """

    patch: int = 16
    width: int = 768
    layers: int = 12
    size: int = 224
    num_classes: int = 400
    n_layers: int = 4
    lmhra: bool = False
    double_lmhra: bool = False
    temporal_downsample: bool = False
    frozen: bool = False
    backbone_drop_path_rate: float = 0.0
    drop_path_rate: float = 0.0
    mlp_dropout: float = 0.5
    head_dropout: float = 0.5
    dtype: Any = None
    attention: str = "xla"
    remat: int = 0

    def setup(self):
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {self.attention!r}")
        if not 0 <= self.remat <= self.layers or not 1 <= self.n_layers <= self.layers:
            raise ValueError(f"remat ({self.remat}) and n_layers ({self.n_layers}) must be within the "
                             f"{self.layers} blocks")
        kt, st, pt = (3, 2, 1) if self.temporal_downsample else (1, 1, 0)
        self.conv1 = nn.Conv(self.width, (kt, self.patch, self.patch), strides=(st, self.patch, self.patch),
                             padding=((pt, pt), (0, 0), (0, 0)), use_bias=False, kernel_init=conv_kernel_init,
                             dtype=self.dtype, conv_general_dilated=backends.conv_general_dilated)
        scale = self.width ** -0.5
        normal = nn.initializers.normal(scale)
        self.class_embedding = self.param("class_embedding", normal, (self.width,))
        self.positional_embedding = self.param("positional_embedding", normal,
                                               ((self.size // self.patch) ** 2 + 1, self.width))
        self.ln_pre = _layer_norm("ln_pre", self.dtype)
        self.transformer = Transformer(
            self.width, self.layers, self.width // HEAD_DIM, self.n_layers, self.lmhra, self.double_lmhra,
            self.frozen, self.backbone_drop_path_rate, self.drop_path_rate, self.mlp_dropout, self.attention,
            self.remat, self.dtype)
        self.head_drop = nn.Dropout(self.head_dropout)
        self.head = nn.Dense(self.num_classes, kernel_init=linear_init)

    def features(self, x, train: bool = False):
        """`layer1`.. (each block's tokens, `(B, T', 1+L, C)`) and `pooled` (the head's input, `(B, C)`, float32).

        Args:
          x: normalised float video `(B, T, size, size, 3)`.
          train: training mode (dropout, drop path, BatchNorm batch statistics).

        Returns:
          The feature dict.
        """
        x = jnp.asarray(x, self.dtype)
        if x.shape[2:4] != (self.size, self.size):
            raise ValueError(f"this model takes {self.size}x{self.size} frames (its positional embedding's), "
                             f"got {x.shape[2]}x{x.shape[3]}")
        x = self.conv1(x)
        b, t, h, w, c = x.shape
        x = x.reshape(b * t, h * w, c)
        cls = jnp.broadcast_to(self.class_embedding.astype(x.dtype), (b * t, 1, c))
        z = self.ln_pre(jnp.concatenate([cls, x], axis=1) + self.positional_embedding.astype(x.dtype))
        pooled, tokens = self.transformer(z, t, train)
        maps = {f"layer{i + 1}": z.reshape(b, t, h * w + 1, c) for i, z in enumerate(tokens)}
        maps["pooled"] = pooled.astype(jnp.float32)
        return maps

    def classify(self, maps: dict, train: bool = False):
        """Logits (float32) from `features`' maps.

        Args:
          maps: `features`' result.
          train: training mode (dropout before the head).

        Returns:
          The head's logits (B, num_classes).
        """
        return self.head(self.head_drop(maps["pooled"], deterministic=not train))

    def __call__(self, x, train: bool = False):
        """Logits (float32) for normalised float video `(B, T, H, W, 3)`."""
        return self.classify(self.features(x, train), train)


def flops(spec: Spec, frames: int, num_classes: int = 400, n_layers: int = 4, lmhra: bool = False,
          double_lmhra: bool = False, temporal_downsample: bool = False, frozen: bool = False) -> int:
    """Forward FLOPs of one clip as the spec counts them (`torch.utils.flop_counter` halved: one per
    multiply-accumulate of the convolutions, linear layers and attention products; norms and activations free).

    Args:
      spec: the CLIP encoder's shape (`SPECS`).
      frames: the clip's frame count.
      num_classes: the head's size.
      n_layers: global UniBlocks.
      lmhra: local MHRA in every block.
      double_lmhra: two of them a block.
      temporal_downsample: the 3×p×p stem of temporal stride 2.
      frozen: no effect on the count (the `balance` fusion is elementwise).

    Returns:
      The FLOP count of one eval-mode forward pass.
    """
    del frozen
    c, n_patch = spec.width, (spec.size // spec.patch) ** 2
    t = (frames - 1) // 2 + 1 if temporal_downsample else frames
    n = n_patch + 1
    total = t * n_patch * c * 3 * spec.patch ** 2 * (3 if temporal_downsample else 1)  # the stem
    block = n * c * 12 * c + 2 * n * n * c  # qkv, out_proj and the 4x MLP; q.k and attn.v
    reduced = int(c // DW_REDUCTION)
    local = n_patch * (2 * c * reduced + 3 * reduced)  # reduce, temporal depthwise, expand
    total += spec.layers * t * (block + local * (lmhra + (lmhra and double_lmhra)))
    extractor = t * n * 2 * c * c + 2 * t * n * c + 10 * c * c  # k, v; q.k, attn.v; q, out_proj, 4x MLP
    total += n_layers * (extractor + t * n_patch * c * 27)  # and the 3x3x3 depthwise position encoding
    return total + c * num_classes

