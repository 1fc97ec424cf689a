"""`python -m convert`: the command-line converter; the conversion itself is `uniformer_jax.weights.conversion`."""
