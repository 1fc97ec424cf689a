"""ml_collections configs, one per released UniFormer model (and the demo's `motion`); what they share is
`uniformer_jax/recipes.py`."""
