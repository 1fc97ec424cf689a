"""python -m uniformer_jax.light_benchmark: UniFormer-XXS/XS against Sense-X's own PyTorch code (see
`uniformer_jax.benchmarks.light`). Needs torch and a clone of github.com/Sense-X/UniFormer."""

import sys

from uniformer_jax.benchmarks.light import main

if __name__ == "__main__":
    sys.exit(main())
