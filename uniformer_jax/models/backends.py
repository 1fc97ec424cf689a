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
