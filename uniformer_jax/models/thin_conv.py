"""3D convolution over a few input channels (the RGB stem of UniFormer-XXS/XS), fast on every backend.

XLA's CPU convolution runs a 3-channel input at ~7 GFLOP/s: UniFormer-XXS's first conv (3 -> 28 channels, 3x3x3,
stride (1, 2, 2)) took a quarter of a 16x160^2 clip. On CPU it runs instead as a sum of strided slices of the
input, one term per tap and input channel, each a per-pixel scalar times the kernel's row of output channels:
elementwise work that XLA vectorises over the output channels, 5-7x faster there. Its derivative is the
convolution's own. On GPU and TPU, and in the portable form for export, it is the ordinary convolution.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen import dtypes
from jax import lax

from uniformer_jax.models.backends import is_portable, one_fusion_each
from uniformer_jax.models.layers import conv_bias_init, conv_kernel_init

MAX_INPUT_CHANNELS = 4  # above this XLA's own convolution is faster
MAX_FUSED_TERMS = 32  # terms summed in one XLA:CPU fusion, see models.backends


class ThinConv(nn.Module):
    """A Conv3d over at most MAX_INPUT_CHANNELS channels, with `layers.conv`'s parameters and initialisation.

    Attributes:
      features: output channels.
      kernel_size: (kt, kh, kw).
      strides: (st, sh, sw).
      padding: symmetric zero padding (pt, ph, pw).
      dtype: the computation dtype (the CPU form sums in float32).
    """

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int]
    padding: Sequence[int]
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        if c > MAX_INPUT_CHANNELS:
            raise ValueError(f"ThinConv takes at most {MAX_INPUT_CHANNELS} input channels, got {c}")
        kernel = self.param("kernel", conv_kernel_init, (*self.kernel_size, c, self.features))
        bias = self.param("bias", conv_bias_init(c * math.prod(self.kernel_size)), (self.features,))
        x, kernel, bias = dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return thin_conv(x, kernel, tuple(self.strides), tuple(self.padding)) + bias


def thin_conv(x, kernel, strides: tuple[int, int, int], padding: tuple[int, int, int]):
    """`x` (B, T, H, W, C) convolved (cross-correlated) with `kernel` (kt, kh, kw, C, O), as `lax.conv`.

    Args:
      x: channels-last video, few channels.
      kernel: the filters.
      strides: per axis (T, H, W).
      padding: symmetric zero padding per axis.

    Returns:
      (B, T', H', W', O), typed as `x`.
    """
    conv = functools.partial(_conv, strides=strides, padding=padding)
    if is_portable():
        return conv(x, kernel)
    cpu = functools.partial(_elementwise_conv, strides=strides, padding=padding)
    return lax.platform_dependent(x, kernel, cpu=cpu, default=conv)


def _conv(x, kernel, strides, padding):
    return lax.conv_general_dilated(x, kernel, strides, [(p, p) for p in padding],
                                    dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _elementwise_conv(x, kernel, strides, padding):
    return _sum_of_slices(x, kernel, strides, padding)


def _elementwise_fwd(x, kernel, strides, padding):
    return _sum_of_slices(x, kernel, strides, padding), (x, kernel)


def _elementwise_bwd(strides, padding, residuals, g):
    _, pullback = jax.vjp(functools.partial(_conv, strides=strides, padding=padding), *residuals)
    return pullback(g)


_elementwise_conv.defvjp(_elementwise_fwd, _elementwise_bwd)


def _sum_of_slices(x, kernel, strides, padding):
    """The convolution as one term per (tap, input channel), summed in float32 in fusions of at most
    MAX_FUSED_TERMS terms or one temporal tap's (27 for the 3x3x3 stem over RGB)."""
    dtype = x.dtype
    x, kernel = x.astype(jnp.float32), kernel.astype(jnp.float32)
    kt, kh, kw, c, _ = kernel.shape
    xp = jnp.pad(x, ((0, 0), *((p, p) for p in padding), (0, 0)))
    out_shape = [(n - k) // s + 1 for n, k, s in zip(xp.shape[1:4], (kt, kh, kw), strides, strict=True)]
    st, sh, sw = strides
    to, ho, wo = out_shape

    def part(taps):
        out = 0
        for a, b, d in taps:
            window = xp[:, a:a + st * (to - 1) + 1:st, b:b + sh * (ho - 1) + 1:sh, d:d + sw * (wo - 1) + 1:sw]
            for i in range(c):
                out = out + window[..., i:i + 1] * kernel[a, b, d, i]
        return out

    taps = [(a, b, d) for a in range(kt) for b in range(kh) for d in range(kw)]
    size = len(taps) if len(taps) * c <= MAX_FUSED_TERMS else kh * kw
    first, *rest = [taps[i:i + size] for i in range(0, len(taps), size)]
    then = [lambda out, group=group: out + part(group) for group in rest]
    return one_fusion_each(functools.partial(part, first), then).astype(dtype)
