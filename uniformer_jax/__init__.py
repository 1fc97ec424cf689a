"""UniFormer video models in JAX/Flax, with weights converted from the PyTorch releases."""

from uniformer_jax.checkpoints import CheckpointError, load_pretrained, save_pretrained
from uniformer_jax.model import VARIANTS, UniFormer, create_model

__all__ = ["VARIANTS", "CheckpointError", "UniFormer", "create_model", "load_pretrained", "save_pretrained"]
