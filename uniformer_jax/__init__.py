"""UniFormer video models in JAX/Flax, with weights converted from the PyTorch releases.

The package, by concern (imports point down this list, never up; `lint-imports` checks it):

- commands users type, `python -m uniformer_jax.<name>`: `zoo`, `labels`, `dataset_builder`, `predict`,
  `visualise`, `app`, `extract`, `export`, `aot`, `demo`, and the benchmarks `benchmark`, `light_benchmark`,
  `input_benchmark`, `deploy_benchmark`;
- `benchmarks/`: speed against the PyTorch originals and the reference models the tests compare with (needs the
  `test` extra; nothing else imports it);
- run-level modules: `step_analysis` (a step compiled for a pod's devices and what it needs there), `training`
  (the recipe and train step), `evaluation` (the test protocol and eval step), `inference` (a checkpoint ready
  for video files), `saliency` (heatmaps), `overlays` (heatmaps drawn on frames), `plots` (evaluation plots),
  `exporting` (StableHLO, ONNX and LiteRT files), `runtimes` (those files run),
  `sharding` (meshes, global batches, `jax.distributed`), `recipes` (what the files in `configs/` are made of),
  `console` (quiet command-line start-up), `storage` (paths that may be gs:// URLs);
- `weights/`: converted checkpoints (Orbax), PyTorch files and keys, conversion both ways, every release, and the
  hub that fetches and caches them;
- `data/`: video files, the dataset builder, record sources, input pipelines, augmentation, class lists;
- `models/`: the shared layers, UniFormer-S/B, the lightweight XXS/XS, every variant by name.
"""

from uniformer_jax import console

console.quiet_libtpu()  # before JAX starts its backends

from uniformer_jax.models.uniformer import UniFormer
from uniformer_jax.models.variants import VARIANT_NAMES, create_model
from uniformer_jax.weights.checkpoints import CheckpointError, save_pretrained
from uniformer_jax.weights.hub import load_pretrained

__all__ = ["VARIANT_NAMES", "CheckpointError", "UniFormer", "create_model", "load_pretrained", "save_pretrained"]
