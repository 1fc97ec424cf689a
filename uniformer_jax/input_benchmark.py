"""python -m uniformer_jax.input_benchmark: input throughput per CPU core, our TFRecord pipelines against decord
on mp4 (see `uniformer_jax.benchmarks.input`). Needs the `bench` extra."""

from uniformer_jax import console

if __name__ == "__main__":
    console.quiet_startup()  # before TensorFlow loads

from absl import app

from uniformer_jax.benchmarks.input import main

if __name__ == "__main__":
    app.run(main)
