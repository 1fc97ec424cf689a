"""The demo's task: which way a square moves (4 classes), on 32x32 videos that `python -m uniformer_jax.demo`
makes. UniFormer-S from random weights, 8 frames at rate 2; sized to train in minutes on 2 CPU cores."""

import ml_collections

from uniformer_jax import recipes


def get_config():
    config = recipes.kinetics("k400", "s", release=None, frames=8, rate=2, top1=None, gflops=None, train=recipes.recipe(
        videos=16, lr=1e-3, epochs=8, warmup=1, drop_path=0.0, init="random", flip=False))
    config.paper = ml_collections.ConfigDict()  # not a paper model
    config.model.num_classes = 4
    config.data.name = "motion"
    config.data.update(short_side=32, crop_size=32, clips=2)
    config.eval.batch_size = 8
    # Flips would turn left into right, erasing and strong crops can hide the square, and on 4 easy classes
    # mixing only slows learning down.
    config.train.update(randaugment=False, erasing=0.0, crop_scale=(0.6, 1.0), crop_size=32, mixup=0.0,
                        cutmix=0.0, dtype="float32", log_every=5, checkpoint_every=50, val_every=40,
                        val_batch_size=8, shuffle_buffer=64)
    return config
