"""ml_collections configs, one per released UniFormer model; the shared parts are in common.py."""
