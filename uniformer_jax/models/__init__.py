"""The Flax modules: what a UniFormer is, with parameters named after the PyTorch modules.

- `layers`: what the model families share (PyTorch's initialisations, Conv3d, depthwise convolutions, stochastic
  depth, patch embeddings, MLPs, self-attention, the local MHRA `CBlock`, the input normalisation);
- `depthwise`: the depthwise 3D convolution, fast on CPU as well as on GPU and TPU;
- `uniformer`: UniFormer-S/B (Li et al., ICLR 2022);
- `light`: the lightweight UniFormer-XXS/XS with Evo-ViT token pruning;
- `uniformerv2`: UniFormerV2 (Li et al., ICCV 2023), CLIP image encoders armed with local and global UniBlocks;
- `variants`: every variant by name: built, recognised from a state dict, counted in FLOPs.

Imports: JAX, Flax and numpy only; nothing else of this package (the bottom of the import order).
"""
