"""UniFormer video models in JAX/Flax, with weights converted from the PyTorch releases."""

from uniformer_jax import console

console.quiet_libtpu()  # before JAX starts its backends

from uniformer_jax.checkpoints import CheckpointError, save_pretrained
from uniformer_jax.model import UniFormer
from uniformer_jax.variants import VARIANTS, create_model

__all__ = ["VARIANTS", "CheckpointError", "UniFormer", "create_model", "load_pretrained", "save_pretrained"]


def __getattr__(name):
    # Imported on first use: `python -m uniformer_jax.zoo` must not find its module already loaded by the package.
    if name == "load_pretrained":
        from uniformer_jax.zoo import load_pretrained

        return load_pretrained
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
