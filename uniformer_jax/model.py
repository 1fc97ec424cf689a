"""UniFormer video models (Li et al., ICLR 2022) in Flax Linen.

The module tree mirrors Sense-X's `video_classification/slowfast/models/uniformer.py`: every submodule carries the
name of its PyTorch counterpart (`patch_embed1/proj`, `blocks1_0/attn`, `blocks3_0/attn/qkv`, `norm`, `head`), so a
PyTorch state dict maps onto the Flax variables by renaming and transposing alone. Video is channels-last,
`(B, T, H, W, 3)`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen import dtypes
from jax import lax

EMBED_DIM = (64, 128, 320, 512)
HEAD_DIM = 64
MLP_RATIO = 4
VARIANTS = {
    "uniformer_small": (3, 4, 8, 3),
    "uniformer_base": (5, 8, 20, 7),
}
ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn")
CACHE_BYTES = 1 << 20  # per chunk of output frames in the CPU depthwise conv, see _shift_add
MEAN, STD = 0.45 * 255, 0.225 * 255  # the original's input normalisation (0.45 / 0.225 on the 0-1 scale)

# timm's trunc_normal_(std=.02) truncates at absolute +-2, i.e. +-100 std: a plain normal in practice.
linear_init = nn.initializers.truncated_normal(stddev=0.02, lower=-100.0, upper=100.0)
# PyTorch's default Conv3d init, kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)).
conv_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def conv_bias_init(fan_in: int):
    bound = 1 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def gelu(x):
    # PyTorch's nn.GELU is the exact erf form; written out, XLA's CPU code is a third faster than
    # jax.nn.gelu(approximate=False) and gives the same values.
    return 0.5 * x * (1 + lax.erf(x * np.sqrt(0.5).astype(x.dtype)))


def conv(features: int, kernel: Sequence[int], in_features: int, *, stride=1, padding=0, groups=1, name=None, dtype=None):
    """A Conv3d with PyTorch's padding and initialisation."""
    kernel = tuple(kernel)
    fan_in = in_features // groups * math.prod(kernel)
    stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
    padding = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
    return nn.Conv(
        features, kernel, strides=stride, padding=[(p, p) for p in padding], feature_group_count=groups,
        kernel_init=conv_kernel_init, bias_init=conv_bias_init(fan_in), dtype=dtype, name=name)


@jax.custom_vjp
def _depthwise_shift_add(x, kernel):
    return _shift_add(x, kernel)


def _shift_add_fwd(x, kernel):
    return _shift_add(x, kernel), (x, kernel)


def _shift_add_bwd(residuals, g):
    """The transpose of a 'same' correlation is the correlation with the flipped kernel; the kernel gradient is
    one reduction per tap. Written out, because XLA's own derivative of the shifted sums fuses badly on CPU
    (20x slower than the forward pass in a CBlock)."""
    x, kernel = residuals
    dx = _shift_add(g, kernel[::-1, ::-1, ::-1])
    kt, kh, kw = kernel.shape[:3]
    h, w = x.shape[2:4]
    xp = _pad_same(x.astype(jnp.float32), kernel.shape)
    g = g.astype(jnp.float32)
    # Each tap reads the gradient and the input once: in chunks of frames that stay in cache together, 2.8x
    # faster at 224^2 than whole-tensor passes (measured per conv, stages 1-2 of UniFormer-S).
    total = None
    for i, n in _frame_chunks(g, CACHE_BYTES // 2):
        taps = jnp.stack([jnp.sum(xp[:, i + a:i + a + n, b:b + h, c:c + w, :] * g[:, i:i + n], axis=(0, 1, 2, 3))
                          for a in range(kt) for b in range(kh) for c in range(kw)])
        total = taps if total is None else lax.optimization_barrier(total) + taps
    return dx, total.reshape(kernel.shape).astype(kernel.dtype)


_depthwise_shift_add.defvjp(_shift_add_fwd, _shift_add_bwd)


def _pad_same(x, kernel_shape):
    """(B, T, H, W, C) padded for a stride-1 'same' correlation with an odd (kt, kh, kw, ...) kernel."""
    return jnp.pad(x, ((0, 0), *((k // 2, k // 2) for k in kernel_shape[:3]), (0, 0)))


def _frame_chunks(x, budget: int) -> list[tuple[int, int]]:
    """(first frame, frame count) of consecutive chunks of float32 (B, T, ...) frames of at most `budget` bytes,
    one frame where a frame alone is larger."""
    t = x.shape[1]
    chunk = max(1, min(t, budget // (x[:, 0].size * 4)))
    return [(i, min(chunk, t - i)) for i in range(0, t, chunk)]


def _shift_add(x, kernel):
    """Depthwise 'same' conv as a sum of shifted, scaled copies of the input, in float32.

    XLA's CPU backend expands grouped convolutions into dense ones (C times the work), which makes the 5x5x5
    depthwise conv about 100x slower than PyTorch; this form is elementwise work that XLA fuses. Output frames
    are computed in chunks of at most CACHE_BYTES (one frame where a frame is larger), with one fusion per
    temporal tap, so that each accumulator stays in cache: measured 2-3x faster than whole-tensor fusions at
    224^2, and at small sizes the fewer chunks halve compile time. bfloat16 elementwise work is emulated on CPUs,
    hence float32.
    """
    dtype = x.dtype
    x, kernel = x.astype(jnp.float32), kernel.astype(jnp.float32)
    kt, kh, kw = kernel.shape[:3]
    h, w = x.shape[2:4]
    xp = _pad_same(x, kernel.shape)
    chunks = []
    for i, n in _frame_chunks(x, CACHE_BYTES):
        out = None
        for a in range(kt):
            part = sum(xp[:, i + a:i + a + n, b:b + h, c:c + w, :] * kernel[a, b, c, 0]
                       for b in range(kh) for c in range(kw))
            out = part if out is None else lax.optimization_barrier(out) + part
        chunks.append(out)
    return jnp.concatenate(chunks, axis=1).astype(dtype)


def _depthwise_conv(x, kernel):
    return lax.conv_general_dilated(
        x, kernel, (1, 1, 1), [(k // 2, k // 2) for k in kernel.shape[:3]],
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), feature_group_count=x.shape[-1])


class DepthwiseConv(nn.Module):
    """Depthwise Conv3d, stride 1, 'same' padding; parameters shaped as `nn.Conv(feature_group_count=C)`'s."""

    kernel_size: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        k = (self.kernel_size,) * 3
        kernel = self.param("kernel", conv_kernel_init, (*k, 1, c))
        bias = self.param("bias", conv_bias_init(math.prod(k)), (c,))
        x, kernel, bias = dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = lax.platform_dependent(x, kernel, cpu=_depthwise_shift_add, default=_depthwise_conv)
        return y + bias


class DropPath(nn.Module):
    """Stochastic depth per sample, as timm's DropPath."""

    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, 0).astype(x.dtype)


class PatchEmbed(nn.Module):
    """Strided conv, then LayerNorm over channels (eps 1e-5, PyTorch's default)."""

    dim: int
    kernel: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int] = (0, 0, 0)
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        x = conv(self.dim, self.kernel, x.shape[-1], stride=self.stride, padding=self.padding, name="proj",
                 dtype=self.dtype)(x)
        return nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm")(x)


class CMlp(nn.Module):
    hidden: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        x = gelu(conv(self.hidden, (1, 1, 1), c, name="fc1", dtype=self.dtype)(x))
        return conv(c, (1, 1, 1), self.hidden, name="fc2", dtype=self.dtype)(x)


class Mlp(nn.Module):
    hidden: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        x = gelu(nn.Dense(self.hidden, kernel_init=linear_init, dtype=self.dtype, name="fc1")(x))
        return nn.Dense(c, kernel_init=linear_init, dtype=self.dtype, name="fc2")(x)


class Attention(nn.Module):
    """Multi-head self-attention over all tokens; qkv rows are [q | k | v], each split head-major."""

    num_heads: int
    implementation: str = "xla"
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        b, n, c = x.shape
        hd = c // self.num_heads
        qkv = nn.Dense(3 * c, kernel_init=linear_init, dtype=self.dtype, name="qkv")(x)
        q, k, v = jnp.unstack(qkv.reshape(b, n, 3, self.num_heads, hd), axis=2)
        x = jax.nn.dot_product_attention(q, k, v, scale=hd ** -0.5, implementation=self.implementation)
        return nn.Dense(c, kernel_init=linear_init, dtype=self.dtype, name="proj")(x.reshape(b, n, c))


class CBlock(nn.Module):
    """Local MHRA block of stages 1-2: depthwise convs and BatchNorm, no attention.

    `layer_scale` (the lightweight models' `_ls` variants) scales each branch by a learnt per-channel
    `gamma_1`/`gamma_2`, stored as PyTorch shapes them, (1, C, 1, 1, 1), starting at that value.
    """

    drop_path: float = 0.0
    mlp_ratio: int = MLP_RATIO
    layer_scale: float | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        bn = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                               dtype=self.dtype)
        drop = DropPath(self.drop_path, name="drop_path")
        gamma = layer_scales(self, (1, c, 1, 1, 1))
        x = x + DepthwiseConv(3, dtype=self.dtype, name="pos_embed")(x)
        y = conv(c, (1, 1, 1), c, name="conv1", dtype=self.dtype)(bn(name="norm1")(x))
        y = DepthwiseConv(5, dtype=self.dtype, name="attn")(y)
        y = conv(c, (1, 1, 1), c, name="conv2", dtype=self.dtype)(y)
        x = x + drop(scaled(y, gamma[0]), deterministic=not train)
        y = CMlp(self.mlp_ratio * c, dtype=self.dtype, name="mlp")(bn(name="norm2")(x))
        return x + drop(scaled(y, gamma[1]), deterministic=not train)


def layer_scales(module: nn.Module, shape: tuple[int, ...]) -> tuple:
    """`gamma_1` and `gamma_2` of a block with `layer_scale` set (in PyTorch's shape), else (None, None)."""
    if module.layer_scale is None:
        return None, None
    init = nn.initializers.constant(module.layer_scale)
    return tuple(module.param(name, init, shape) for name in ("gamma_1", "gamma_2"))


def scaled(y, gamma):
    return y if gamma is None else y * gamma.reshape(y.shape[-1]).astype(y.dtype)


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


def check_remat(remat, depth) -> None:
    if any(not 0 <= r <= d for r, d in zip(remat, depth)):
        raise ValueError(f"remat {remat} must be between 0 and the depth {depth} in each stage")


def drop_path_rates(rate: float, depth) -> list[float]:
    """Stochastic depth of every block in order, rising linearly from 0 to `rate` (the original's rule)."""
    total = sum(depth)
    return [rate * i / max(total - 1, 1) for i in range(total)]


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
    """

    depth: tuple[int, int, int, int] = VARIANTS["uniformer_small"]
    num_classes: int = 400
    drop_path_rate: float = 0.0
    ln_eps: float = 1e-6
    dtype: Any = None
    attention: str = "xla"
    remat: tuple[int, int, int, int] = (0, 0, 0, 0)

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
        """Per-stage feature maps (`stage1`..`stage4`, after the final norm for `stage4`) and `pooled`."""
        x = jnp.asarray(x, self.dtype)
        maps = {}
        embeds = (self.patch_embed1, self.patch_embed2, self.patch_embed3, self.patch_embed4)
        stages = (self.blocks1, self.blocks2, self.blocks3, self.blocks4)
        for s, (embed, blocks) in enumerate(zip(embeds, stages)):
            x = embed(x)
            for block in blocks:
                x = block(x, train)
            maps[f"stage{s + 1}"] = x
        x = self.norm(x, use_running_average=not train)
        maps["stage4"] = x
        maps["pooled"] = jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))
        return maps

    def __call__(self, x, train: bool = False):
        """Logits (float32) for normalised float video `(B, T, H, W, 3)`."""
        return self.head(self.features(x, train)["pooled"])


def normalise(video, dtype=None):
    """uint8 video to the model's input scale, (x / 255 - 0.45) / 0.225; call it inside the jitted step."""
    x = (jnp.asarray(video, jnp.float32) - MEAN) / STD
    return x if dtype is None else x.astype(dtype)


def flops(depth: Sequence[int], frames: int, size: int = 224, num_classes: int = 400) -> int:
    """Forward FLOPs of one clip as fvcore counts them (the paper's figures): one per multiply-accumulate of the
    convolutions, linear layers and attention products, 5 per LayerNorm and 2 per BatchNorm element (eval mode);
    activations, softmax and additions are not counted."""
    t, h = frames // 2, size // 4
    total = t * h * h * EMBED_DIM[0] * (3 * 4 * 4 * 3 + 5)  # patch_embed1 and its LayerNorm
    for s, (blocks, c) in enumerate(zip(depth, EMBED_DIM)):
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
