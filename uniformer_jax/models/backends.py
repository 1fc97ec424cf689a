"""How the models' CPU forms are traced: a long sum cut into XLA:CPU fusions, and the portable form for export.

XLA's CPU backend fuses a sum of shifted slices into one loop, however long. Up to a few dozen terms the loop runs
at 20-40 GFLOP/s a core; from about 125 (a 5x5x5 depthwise convolution) the code it generates runs ~10x slower.
Optimisation barriers do not cut fusions there (the CPU pipeline removes them first), so `one_fusion_each` puts
each part of the sum in a branch of a `lax.switch` inside a loop, which XLA compiles on its own.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Sequence

from jax import lax

_PORTABLE = contextvars.ContextVar("portable", default=False)


@contextlib.contextmanager
def portable():
    """Within this context, the models trace without platform branches, in the ops every runtime has.

    For exported programs (`python -m uniformer_jax.export`): LiteRT and ONNX runtimes have fast 2D depthwise
    convolutions and ordinary convolutions, and no grouped 3D convolution; a program for them must not branch on
    the platform.

    Yields:
      Nothing.
    """
    token = _PORTABLE.set(True)
    try:
        yield
    finally:
        _PORTABLE.reset(token)


def is_portable() -> bool:
    """Whether tracing is inside `portable()`.

    Returns:
      True within the context.
    """
    return _PORTABLE.get()


def one_fusion_each(first: Callable, then: Sequence[Callable]):
    """`first()` passed through the functions `then` in order, each of the parts compiled as a fusion of its own.

    Args:
      first: makes the accumulator (outside the loop, so that no zero-filled buffer is written and copied in).
      then: functions of the accumulator that return an array shaped and typed as it.

    Returns:
      The last function's result.
    """
    acc = first()
    if len(then) <= 1:
        return then[0](acc) if then else acc
    return lax.fori_loop(0, len(then), lambda i, acc: lax.switch(i, then, acc), acc)


def conv_general_dilated(lhs, rhs, window_strides, padding, *, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None):
    """`lax.conv_general_dilated`, but in the portable form a 3D convolution over non-overlapping windows is a matmul.

    LiteRT and onnxruntime run a 3D convolution through a generic kernel several times slower than their matrix
    multiply; the pointwise and patch-embedding convolutions of the models (unpadded, stride equal to the window)
    are a matmul over each window's values. `nn.Conv(conv_general_dilated=...)` calls it as it calls lax's.

    Args:
      lhs: the input, (N, D, H, W, C) when the matmul applies.
      rhs: the kernel, (kd, kh, kw, C, O) when the matmul applies.
      window_strides: the strides.
      padding: "VALID", "SAME" or (low, high) pairs.
      lhs_dilation: input dilation.
      rhs_dilation: kernel dilation.
      dimension_numbers: lax's dimension numbers.
      feature_group_count: groups.
      precision: the matmul's precision.

    Returns:
      The convolution, as lax computes it.
    """
    window = tuple(rhs.shape[:3])
    as_matmul = (
        is_portable() and lhs.ndim == 5 and feature_group_count == 1
        and dimension_numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NDHWC", "DHWIO", "NDHWC"))
        and (padding == "VALID" or (not isinstance(padding, str) and all(tuple(p) == (0, 0) for p in padding)))
        and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
        and tuple(window_strides) == window and all(s % k == 0 for s, k in zip(lhs.shape[1:4], window, strict=True)))
    if not as_matmul:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                        feature_group_count=feature_group_count, precision=precision)
    n, d, h, w, c = lhs.shape
    kd, kh, kw = window
    out = (n, d // kd, h // kh, w // kw)
    if window != (1, 1, 1):  # each window's values side by side, in the kernel's (kd, kh, kw, C) order
        lhs = lhs.reshape(n, d // kd, kd, h // kh, kh, w // kw, kw, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
    patches = lhs.reshape(*out, kd * kh * kw * c)
    return lax.dot_general(patches, rhs.reshape(kd * kh * kw * c, rhs.shape[-1]), (((4,), (0,)), ((), ())),
                           precision=precision)
