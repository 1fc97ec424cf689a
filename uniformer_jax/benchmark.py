"""python -m uniformer_jax.benchmark: the JAX model against MMAction2's PyTorch UniFormer (see
`uniformer_jax.benchmarks.models` for what it times). Needs the `test` extra."""

import sys

from uniformer_jax.benchmarks.models import main

if __name__ == "__main__":
    sys.exit(main())
