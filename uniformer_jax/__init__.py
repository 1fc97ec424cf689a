"""UniFormer video models in JAX/Flax, with weights converted from the PyTorch releases."""

from uniformer_jax.checkpoints import CheckpointError, save_pretrained
from uniformer_jax.model import VARIANTS, UniFormer, create_model
from uniformer_jax.zoo import load_pretrained

__all__ = ["VARIANTS", "CheckpointError", "UniFormer", "create_model", "load_pretrained", "save_pretrained"]
