"""Speed against the PyTorch originals, and the reference models the tests compare with.

- `models`: inference and train steps of JAX against MMAction2 eager and `torch.compile`
  (`python -m uniformer_jax.benchmark`);
- `light`: UniFormer-XXS/XS against Sense-X's own code (`python -m uniformer_jax.light_benchmark`);
- `input`: the TFRecord pipelines against decord on mp4 (`python -m uniformer_jax.input_benchmark`);
- `mmaction2`: MMAction2's PyTorch UniFormer, built and randomised;
- `sensex`: Sense-X's light model code, imported from a checkout.

Needs the `test` extra (torch, mmaction2, mmengine, mmcv-lite). May import any part of the package; nothing in
the library imports it, so `import uniformer_jax` and the user commands never load torch.
"""
