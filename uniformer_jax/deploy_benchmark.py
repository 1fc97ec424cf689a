"""python -m uniformer_jax.deploy_benchmark: exported files in onnxruntime, LiteRT and jax against the JAX model and
the original PyTorch code, CPU latency (see `uniformer_jax.benchmarks.deploy`). Needs torch, the export runtimes
and a clone of github.com/Sense-X/UniFormer."""

import sys

from uniformer_jax.benchmarks.deploy import main

if __name__ == "__main__":
    sys.exit(main())
