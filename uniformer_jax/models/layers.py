"""The layers UniFormer-S/B and the lightweight UniFormer-XXS/XS share, named after their PyTorch modules.

PyTorch's initialisations, the Conv3d wrapper, depthwise convolutions, stochastic depth, patch embeddings, the
MLPs, multi-head self-attention, the local MHRA block of stages 1-2 (`CBlock`), and the input convention of every
UniFormer (`normalise`). Video is channels-last, `(B, T, H, W, C)`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen import dtypes
from jax import lax

from uniformer_jax.models import backends
from uniformer_jax.models.depthwise import depthwise_conv

MLP_RATIO = 4
MEAN, STD = 0.45 * 255, 0.225 * 255  # the original's input normalisation (0.45 / 0.225 on the 0-1 scale)

# timm's trunc_normal_(std=.02) truncates at absolute +-2, i.e. +-100 std: a plain normal in practice.
linear_init = nn.initializers.truncated_normal(stddev=0.02, lower=-100.0, upper=100.0)
# PyTorch's default Conv3d init, kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)).
conv_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def conv_bias_init(fan_in: int):
    """PyTorch's default Conv3d bias initialisation, U(+-1/sqrt(fan_in)).

    Args:
      fan_in: input channels per group times the kernel's size.

    Returns:
      A Flax initialiser.
    """
    bound = 1 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def gelu(x):
    # PyTorch's nn.GELU is the exact erf form; written out, XLA's CPU code is a third faster than
    # jax.nn.gelu(approximate=False) and gives the same values. In the portable form it is a composite that
    # TensorFlow's LiteRT converter turns into its GELU op (exported StableHLO has no erf: it would be a
    # polynomial of ~20 elementwise ops, a third of LiteRT's and onnxruntime's time on XXS).
    """PyTorch's nn.GELU, the exact erf form.

    Args:
      x: any array.

    Returns:
      GELU(x), shaped and typed as `x`.
    """
    if backends.is_portable():
        return _tfl_gelu(x, approximate=False)
    return _gelu(x)


def _gelu(x):
    return 0.5 * x * (1 + lax.erf(x * np.sqrt(0.5).astype(x.dtype)))


# The converter reads `approximate` as an attribute; False (the erf form) is what the decomposition computes.
_tfl_gelu = lax.composite(lambda x, approximate: _gelu(x), name="tfl.gelu")


def conv(features: int, kernel: Sequence[int], in_features: int, *, stride=1, padding=0, groups=1, name=None,
         dtype=None) -> nn.Conv:
    """A Conv3d with PyTorch's padding and initialisation.

    Args:
      features: output channels.
      kernel: (kt, kh, kw).
      in_features: input channels (for the initialisation's fan-in).
      stride: one stride for all axes, or three.
      padding: one symmetric padding for all axes, or three.
      groups: feature groups.
      name: the submodule's name (the PyTorch module's).
      dtype: the computation dtype.

    Returns:
      The `nn.Conv` module.
    """
    kernel = tuple(kernel)
    fan_in = in_features // groups * math.prod(kernel)
    stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
    padding = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
    return nn.Conv(
        features, kernel, strides=stride, padding=[(p, p) for p in padding], feature_group_count=groups,
        kernel_init=conv_kernel_init, bias_init=conv_bias_init(fan_in), dtype=dtype, name=name,
        conv_general_dilated=backends.conv_general_dilated)


class DepthwiseConv(nn.Module):
    """Depthwise Conv3d, stride 1, 'same' padding; parameters shaped as `nn.Conv(feature_group_count=C)`'s.

    `kernel_size`: one odd size for all axes, or (kt, kh, kw); `bias_init`: None for PyTorch's default.
    """

    kernel_size: int | tuple[int, int, int]
    bias_init: Any = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        k = (self.kernel_size,) * 3 if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
        kernel = self.param("kernel", conv_kernel_init, (*k, 1, c))
        bias = self.param("bias", self.bias_init or conv_bias_init(math.prod(k)), (c,))
        x, kernel, bias = dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = depthwise_conv(x, kernel)
        return y + bias


def drop_path(module: nn.Module, x, rate: float, mask_shape: tuple[int, ...], deterministic: bool):
    """Stochastic depth: a branch's output kept or dropped as a whole along the axes `mask_shape` spans.

    Args:
      module: the module whose `dropout` RNG stream draws the mask.
      x: a branch's output.
      rate: the drop probability.
      mask_shape: the mask's shape, broadcast against `x` (timm's DropPath: `(B, 1, ..., 1)`, per sample).
      deterministic: evaluation (nothing dropped).

    Returns:
      `x` with dropped entries zero and the rest scaled by 1 / (1 - rate).
    """
    if deterministic or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep, mask_shape)
    return jnp.where(mask, x / keep, 0).astype(x.dtype)


class DropPath(nn.Module):
    """Stochastic depth per sample, as timm's DropPath."""

    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        return drop_path(self, x, self.rate, (x.shape[0],) + (1,) * (x.ndim - 1), deterministic)


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


def probe(module: nn.Module, name: str, x):
    """`x` plus a zero perturbation `name` when a `perturbations` collection is passed, so that `jax.grad` of the
    output against it is the gradient at this map (Grad-CAM); `x` itself otherwise, and at initialisation, which would
    otherwise store the perturbation among the variables.

    Args:
      module: the module the map belongs to.
      name: the perturbation's name (the feature map's).
      x: the map.

    Returns:
      The map, perturbed where asked.
    """
    return x if module.is_initializing() else module.perturb(name, x)


def sow_attention(module: nn.Module, q, k, scale: float) -> None:
    """Sows the head-averaged attention weights `(B, Nq, Nk)` of q, k `(B, N, heads, D)` as the intermediate
    `weights`, when `intermediates` are asked for (attention maps); otherwise nothing is computed.

    Args:
      module: the attention module.
      q: the queries.
      k: the keys.
      scale: the logits' scale.
    """
    if module.is_mutable_collection("intermediates"):
        logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) * scale
        module.sow("intermediates", "weights", jax.nn.softmax(logits, axis=-1).mean(axis=1))


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
        sow_attention(self, q, k, hd ** -0.5)
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
    """`gamma_1` and `gamma_2` of a block with `layer_scale` set, in PyTorch's shape.

    Args:
      module: a block whose `layer_scale` attribute is the initial value, or None.
      shape: the parameters' shape, e.g. (1, C, 1, 1, 1).

    Returns:
      The two parameters, or (None, None) without layer scale.
    """
    if module.layer_scale is None:
        return None, None
    init = nn.initializers.constant(module.layer_scale)
    return tuple(module.param(name, init, shape) for name in ("gamma_1", "gamma_2"))


def scaled(y, gamma):
    """A branch's output scaled by its layer-scale parameter, where there is one.

    Args:
      y: the branch's output, channels last.
      gamma: a parameter of `layer_scales`, or None.

    Returns:
      `y * gamma` per channel, or `y`.
    """
    return y if gamma is None else y * gamma.reshape(y.shape[-1]).astype(y.dtype)


def check_remat(remat, depth) -> None:
    """Refuses a remat setting outside the model's stages.

    Args:
      remat: leading blocks to recompute, per stage.
      depth: blocks per stage.

    Raises:
      ValueError: a count below 0 or above its stage's depth.
    """
    if any(not 0 <= r <= d for r, d in zip(remat, depth, strict=True)):
        raise ValueError(f"remat {remat} must be between 0 and the depth {depth} in each stage")


def drop_path_rates(rate: float, depth) -> list[float]:
    """Stochastic depth of every block in order, rising linearly from 0 to `rate` (the original's rule).

    Args:
      rate: the last block's rate.
      depth: blocks per stage.

    Returns:
      One rate per block, stage after stage.
    """
    total = sum(depth)
    return [rate * i / max(total - 1, 1) for i in range(total)]


def normalise(video, dtype=None):
    """uint8 video to the models' input scale, (x / 255 - 0.45) / 0.225; call it inside the jitted step.

    Args:
      video: uint8 (or float 0-255) clips, channels last.
      dtype: the result's dtype; None: float32.

    Returns:
      The normalised video.
    """
    x = (jnp.asarray(video, jnp.float32) - MEAN) / STD
    return x if dtype is None else x.astype(dtype)
