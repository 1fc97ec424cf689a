"""Depthwise 3D convolution (stride 1, 'same' padding) that is fast on every backend.

On GPU and TPU it is an ordinary grouped convolution. XLA's CPU backend expands grouped convolutions into dense
ones (C times the work, about 100x slower than PyTorch's 5x5x5 depthwise conv), so on CPU it runs as fused
shift-and-add code with a hand-written derivative. In the portable form (`models.backends.portable`) it is one 2D
depthwise convolution per temporal tap.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from uniformer_jax.models.backends import is_portable, one_fusion_each

CACHE_BYTES = 1 << 20  # per chunk of frames in the kernel gradient, see _shift_add_bwd
MAX_FUSED_TAPS = 32  # taps summed in one XLA:CPU fusion, see models.backends


def depthwise_conv(x, kernel):
    """`x` (B, T, H, W, C) correlated channel by channel with `kernel` (kt, kh, kw, 1, C), odd sizes.

    Args:
      x: channels-last video features.
      kernel: one (kt, kh, kw) filter per channel, shaped as `nn.Conv(feature_group_count=C)`'s.

    Returns:
      An array shaped and typed as `x`.
    """
    if is_portable():
        return _per_frame_conv(x, kernel)
    return lax.platform_dependent(x, kernel, cpu=_depthwise_shift_add, default=_grouped_conv)


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

    # Each tap reads the gradient and the input once, in chunks of frames that stay in cache together: XLA:CPU's
    # reductions are slow, and chunked they took 0.3-0.8x the time of whole-tensor ones (UniFormer-XXS's stage 1).
    total = None
    for i, n in _frame_chunks(g, CACHE_BYTES // 2):
        taps = jnp.stack([jnp.sum(xp[:, i + a:i + a + n, b:b + h, c:c + w, :] * g[:, i:i + n], axis=(0, 1, 2, 3))
                          for a in range(kt) for b in range(kh) for c in range(kw)])
        total = taps if total is None else total + taps
    return dx, total.reshape(kernel.shape).astype(kernel.dtype)


_depthwise_shift_add.defvjp(_shift_add_fwd, _shift_add_bwd)


def _pad_same(x, kernel_shape):
    """(B, T, H, W, C) padded for a stride-1 'same' correlation with an odd (kt, kh, kw, ...) kernel."""
    return jnp.pad(x, ((0, 0), *((k // 2, k // 2) for k in kernel_shape[:3]), (0, 0)))


def _frame_chunks(x, budget: int) -> list[tuple[int, int]]:
    """(first frame, frame count) of consecutive chunks of float32 (B, T, ...) frames of at most `budget` bytes,
    one frame where a frame alone is larger. A symbolic batch (an exported program's, `jax.export`) is chunked as
    one clip: its size is unknown until the program runs."""
    b, t = x.shape[:2]
    frame_bytes = (b if isinstance(b, int) else 1) * math.prod(x.shape[2:]) * 4
    chunk = max(1, min(t, budget // frame_bytes))
    return [(i, min(chunk, t - i)) for i in range(0, t, chunk)]


def _tap_groups(kernel_shape) -> list[list[tuple[int, int, int]]]:
    """The kernel's (a, b, c) taps in order, in groups summed by one fusion each: all of them when they are at most
    MAX_FUSED_TAPS (3x3x3), otherwise those of one temporal offset a group (5 groups of 25 for 5x5x5)."""
    kt, kh, kw = kernel_shape[:3]
    taps = [(a, b, c) for a in range(kt) for b in range(kh) for c in range(kw)]
    size = len(taps) if len(taps) <= MAX_FUSED_TAPS else kh * kw
    return [taps[i:i + size] for i in range(0, len(taps), size)]


def _shift_add(x, kernel):
    """Depthwise 'same' conv as a sum of shifted, scaled copies of the input, in float32.

    XLA's CPU backend expands grouped convolutions into dense ones (C times the work), which makes the 5x5x5
    depthwise conv about 100x slower than PyTorch; this form is elementwise work that XLA fuses, in fusions of at
    most MAX_FUSED_TAPS taps or one temporal offset (`_tap_groups`): one fusion of all 125 taps of a 5x5x5 kernel
    runs 3-10x slower than five of 25 (measured on UniFormer-XXS's stages 1-2). bfloat16 elementwise work is
    emulated on CPUs, hence float32.
    """
    dtype = x.dtype
    x, kernel = x.astype(jnp.float32), kernel.astype(jnp.float32)
    t, h, w = x.shape[1:4]
    xp = _pad_same(x, kernel.shape)

    def part(taps):
        return sum(xp[:, a:a + t, b:b + h, c:c + w, :] * kernel[a, b, c, 0] for a, b, c in taps)

    first, *rest = _tap_groups(kernel.shape)
    then = [lambda out, taps=taps: out + part(taps) for taps in rest]
    return one_fusion_each(functools.partial(part, first), then).astype(dtype)


def _grouped_conv(x, kernel):
    return lax.conv_general_dilated(
        x, kernel, (1, 1, 1), [(k // 2, k // 2) for k in kernel.shape[:3]],
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), feature_group_count=x.shape[-1])


def _per_frame_conv(x, kernel):
    """The depthwise conv as a sum over temporal taps of 2D depthwise convs of the (padded) frames."""
    kt, kh, kw = kernel.shape[:3]
    b, t, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (kt // 2, kt // 2), (0, 0), (0, 0), (0, 0)))
    out = 0
    for a in range(kt):
        frames = xp[:, a:a + t].reshape(b * t, h, w, c)
        out = out + lax.conv_general_dilated(
            frames, kernel[a], (1, 1), [(kh // 2, kh // 2), (kw // 2, kw // 2)],
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
    return out.reshape(b, t, h, w, c)
