"""Weights: converted checkpoints, PyTorch files, every release and the cache that holds them.

- `checkpoints`: the converted format (`uniformer.json` and Orbax `variables/`), saved atomically, loaded strictly;
- `torch_files`: reading and checking PyTorch checkpoint files, and inflating 2D weights to 3D;
- `torch_keys`: PyTorch state-dict keys to Flax variable paths and back;
- `conversion`: `.pth` to converted checkpoint (`to_orbax`) and back (`to_torch`);
- `releases`: every released checkpoint, where it is published and its hash;
- `hub`: fetching, verifying, converting and caching releases by name, and `load_pretrained`.

Imports: `uniformer_jax.models` and `uniformer_jax.data.class_lists` (the class lists of released heads); never
`uniformer_jax.data`'s pipelines, the run-level modules or the commands. torch only inside the functions that
read or write `.pth` files.
"""
