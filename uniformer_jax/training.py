"""The original training recipe (Sense-X `video_classification/exp/*/config.yaml`, `run.sh`) as one jitted step over a
device mesh.

AdamW without decay on 1-D parameters, linear warmup then cosine per step, global-norm clipping, mixup/cutmix
with label smoothing and soft-target cross-entropy (binary cross-entropy, one sigmoid a class, for multi-label
data), stochastic depth, gradient accumulation. BatchNorm
statistics are computed over the whole global (micro-)batch: under jit a sharded batch is one array, so this is
SyncBN, where the original normalised each GPU's 4-16 clips on their own.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from uniformer_jax import freezing, sharding
from uniformer_jax.mixing import Mixing, mix
from uniformer_jax.models import variants
from uniformer_jax.models.layers import normalise
from uniformer_jax.models.variants import VARIANT_NAMES, create_model, is_v2
from uniformer_jax.weights.checkpoints import abstract_variables


def decay_mask(params):
    """Weight decay on kernels only: biases, norm scales and other 1-D parameters get none (ZERO_WD_1D_PARAM).

    Args:
      params: the model's parameters.

    Returns:
      A tree of booleans shaped as `params`, for `optax.adamw(mask=...)`.
    """
    return jax.tree.map(lambda p: p.ndim > 1, params)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Optimiser and schedule; `lr` is for `reference_batch` clips and scales linearly with the real batch."""
    lr: float
    reference_batch: int
    batch_size: int
    total_steps: int
    warmup_steps: int
    warmup_lr: float = 1e-6
    end_lr: float = 1e-6
    weight_decay: float = 0.05
    clip_norm: float = 20.0

    @property
    def peak_lr(self) -> float:
        return self.lr * self.batch_size / self.reference_batch

    def schedule(self) -> optax.Schedule:
        return optax.warmup_cosine_decay_schedule(self.warmup_lr, self.peak_lr, self.warmup_steps,
                                                  max(self.total_steps, self.warmup_steps + 1), self.end_lr)

    def optimizer(self) -> optax.GradientTransformation:
        return optax.chain(optax.clip_by_global_norm(self.clip_norm),
                           optax.adamw(self.schedule(), b1=0.9, b2=0.999, eps=1e-8, weight_decay=self.weight_decay,
                                       mask=decay_mask))


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: dict
    batch_stats: dict
    opt_state: optax.OptState
    rng: jax.Array  # raw uint32 key data, so checkpoints hold a plain array


def init_state(variables, tx: optax.GradientTransformation, seed: int, freeze: int = 0) -> TrainState:
    """The train state at step 0.

    Args:
      variables: the model's `params` and `batch_stats`.
      tx: the optimiser.
      seed: the seed of the run's random stream (drop path, mixing).
      freeze: `freezing.freeze_level`: the optimiser's state covers only the parameters that learn.

    Returns:
      The `TrainState`.
    """
    trainable, _ = freezing.split(variables["params"], freeze)
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(trainable),
                      rng=jax.random.key_data(jax.random.key(seed)))


def micro_batches(x, accumulate: int, shards: int):
    """(B, ...) into (accumulate, B / accumulate, ...), each micro-batch taking rows from every shard of the batch.

    The split needs no data to move between devices.

    Args:
      x: a batch array.
      accumulate: the number of micro-batches.
      shards: the number of devices the batch axis is split over.

    Returns:
      The micro-batches, stacked.
    """
    per_shard = x.shape[0] // shards
    x = x.reshape(shards, accumulate, per_shard // accumulate, *x.shape[1:])
    return jnp.swapaxes(x, 0, 1).reshape(accumulate, x.shape[0] * x.shape[2], *x.shape[3:])


def make_train_step(model, tx: optax.GradientTransformation, schedule: optax.Schedule, mixing: Mixing,
                    accumulate: int = 1, mesh: jax.sharding.Mesh | None = None, dtype=None, freeze: int = 0,
                    multi_label: bool = False):
    """The train step: forward, mixup/cutmix with label smoothing, backward, clipping, AdamW; not jitted here.

    With `accumulate` > 1 the batch is split into that many micro-batches whose gradients are averaged before
    one optimiser update; each micro-batch updates the BatchNorm statistics in turn, as separate steps would.
    On a `mesh`, clips stay split over all its devices from input to loss, and parameters split over `fsdp`
    are gathered whole before use: left to itself, XLA's partitioner may instead gather activations of the
    whole batch where they are smaller than a layer's weights.

    Args:
      model: the model, in its training configuration (drop path, dtype, remat).
      tx: the optimiser (`optax`), clipping included.
      schedule: the learning rate by step, for the metrics.
      mixing: the mixup/cutmix settings.
      accumulate: micro-batches per update.
      mesh: the `sharding.train_mesh`, or None on one device.
      dtype: the compute dtype, None for float32.
      freeze: `freezing.freeze_level`: frozen parameters are not differentiated or updated; the model must
        have been made with `frozen_stages` = `freeze` (below `freezing.BACKBONE`), so that frozen stages run
        as in evaluation; the backbone (`BACKBONE`) runs in evaluation mode and only the heads learn.
      multi_label: labels are multi-hot vectors and each class its own sigmoid: binary cross-entropy averaged
        over classes and clips (PySlowFast's `bce_logit` for Charades), and the metric `precision_at_1` (the
        share of clips whose top class is one of theirs) in place of `accuracy`.

    Returns:
      `step(state, {video (B, T, H, W, 3) uint8, label (B,) or (B, K) multi-hot}) -> (state, metrics)`.
    """
    num_classes = model.num_classes
    shards = mesh.size if mesh is not None else 1

    if 0 < freeze < freezing.BACKBONE and getattr(model, "frozen_stages", None) != freeze:  # UniFormer's stages
        raise ValueError(f"freezing {freeze} stages needs the model made with frozen_stages={freeze}")
    criterion = optax.sigmoid_binary_cross_entropy if multi_label else optax.softmax_cross_entropy
    hit_name = "precision_at_1" if multi_label else "accuracy"

    def hits(logits, label):
        top = jnp.argmax(logits, -1)
        if multi_label:
            return jnp.take_along_axis(label, top[:, None], axis=-1)[:, 0]
        return (top == label).astype(jnp.float32)

    def forward(variables, video, key):
        if freeze == freezing.BACKBONE:  # a linear probe: features as in evaluation, only the heads train
            maps = model.apply(variables, video, train=False, method="features")
            return model.apply(variables, maps, train=True, method="classify"), variables.get("batch_stats", {})
        logits, mutated = model.apply(variables, video, train=True, rngs={"dropout": key}, mutable=["batch_stats"])
        return logits, mutated.get("batch_stats", {})

    def loss_fn(trainable, frozen, batch_stats, video, targets, key):
        params = freezing.join(trainable, frozen)
        if mesh is not None:
            video = jax.lax.with_sharding_constraint(video, sharding.batch_sharding(mesh))
            if mesh.shape.get("fsdp", 1) > 1:
                params = jax.lax.with_sharding_constraint(params, sharding.replicated(mesh))
        logits, batch_stats = forward({"params": params, "batch_stats": batch_stats}, video, key)
        if isinstance(logits, tuple):  # the light models' two heads: the original averages their losses
            loss = sum(criterion(x, targets).mean() for x in logits) / len(logits)
            return loss, (batch_stats, logits[0])
        loss = criterion(logits, targets).mean()
        return loss, (batch_stats, logits)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)  # by the trainable parameters alone

    def micro(trainable, frozen, batch_stats, video, label, key):
        mix_key, drop_key = jax.random.split(key)
        x, targets = mix(normalise(video, dtype), label, num_classes, mixing, mix_key)
        (loss, (batch_stats, logits)), grads = grad_fn(trainable, frozen, batch_stats, x, targets, drop_key)
        return grads, batch_stats, loss, jnp.mean(hits(logits, label))

    def accumulated(trainable, frozen, batch_stats, batch, key):
        def body(carry, xs):
            grads, batch_stats = carry
            video, label, i = xs
            g, batch_stats, loss, correct = micro(trainable, frozen, batch_stats, video, label,
                                                  jax.random.fold_in(key, i))
            return (jax.tree.map(jnp.add, grads, g), batch_stats), (loss, correct)

        zeros = jax.tree.map(jnp.zeros_like, trainable)
        xs = (micro_batches(batch["video"], accumulate, shards), micro_batches(batch["label"], accumulate, shards),
              jnp.arange(accumulate))
        (grads, batch_stats), (losses, correct) = jax.lax.scan(body, (zeros, batch_stats), xs)
        return jax.tree.map(lambda g: g / accumulate, grads), batch_stats, losses.mean(), correct.mean()

    def step(state: TrainState, batch):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        trainable, frozen = freezing.split(state.params, freeze)
        if accumulate == 1:  # XLA:CPU runs the model ~5x slower inside a loop, so no scan of one
            grads, batch_stats, loss, accuracy = micro(trainable, frozen, state.batch_stats, batch["video"],
                                                       batch["label"], jax.random.fold_in(key, 0))
        else:
            grads, batch_stats, loss, accuracy = accumulated(trainable, frozen, state.batch_stats, batch, key)
        updates, opt_state = tx.update(grads, state.opt_state, trainable)
        metrics = {"loss": loss, hit_name: accuracy, "grad_norm": optax.global_norm(grads),
                   "lr": schedule(state.step)}
        params = freezing.join(optax.apply_updates(trainable, updates), frozen)
        return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                             opt_state=opt_state), metrics

    return step


def steps_per_epoch(videos: int, repeats: int, batch_size: int) -> int:
    """Optimiser steps in one pass over the training videos.

    Args:
      videos: the split's video count.
      repeats: clips per video per epoch.
      batch_size: clips per step.

    Returns:
      The step count, at least 1.
    """
    return max(1, math.ceil(videos * repeats / batch_size))


def compute_dtype(name: str):
    """The compute dtype a config names.

    Args:
      name: `float32` or `bfloat16`.

    Returns:
      `jnp.bfloat16`, or None for float32.

    Raises:
      ValueError: another name.
    """
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"train.dtype is {name!r}; use float32 or bfloat16")
    return jnp.bfloat16 if name == "bfloat16" else None


def check_layout(config, devices: int) -> None:
    """The config's model, and its batch split over `devices`: into micro-batches, mixing groups and fsdp.

    Args:
      config: a train.py config.
      devices: the number of devices of the run.

    Raises:
      ValueError: an unknown variant, dtype or freeze, or a batch, micro-batch count or fsdp that does not
        divide.
    """
    t = config.train
    if config.model.variant not in VARIANT_NAMES:
        raise ValueError(f"unknown variant {config.model.variant!r}; use one of {', '.join(VARIANT_NAMES)}")
    compute_dtype(t.dtype)
    freezing.check(t.freeze, is_v2(config.model.variant))
    if t.batch_size % devices:
        raise ValueError(f"train.batch_size {t.batch_size} does not split over {devices} devices; set "
                         "--config.train.batch_size to a multiple of it (the learning rate scales with it)")
    if (t.batch_size // devices) % t.accumulate or (t.batch_size // t.accumulate) % t.mix_group:
        raise ValueError(f"train.batch_size {t.batch_size} on {devices} devices must split into "
                         f"train.accumulate={t.accumulate} micro-batches per device, each a multiple of "
                         f"train.mix_group={t.mix_group} clips over all devices")
    if devices % t.fsdp:
        raise ValueError(f"train.fsdp={t.fsdp} must divide the {devices} devices")


def recipe_of(config, steps_per_epoch: int) -> Recipe:
    """The optimisation recipe of a config.

    Args:
      config: a train.py config.
      steps_per_epoch: optimiser steps per epoch.

    Returns:
      The `Recipe`: learning rates, schedule lengths, weight decay, clipping.
    """
    t = config.train
    return Recipe(lr=t.lr, reference_batch=t.reference_batch, batch_size=t.batch_size,
                  total_steps=t.epochs * steps_per_epoch, warmup_steps=t.warmup_epochs * steps_per_epoch,
                  warmup_lr=t.warmup_lr, end_lr=t.end_lr, weight_decay=t.weight_decay, clip_norm=t.clip_norm)


def architecture_of(config, init: dict | None = None) -> dict:
    """The structure of the UniFormerV2 a config trains: its `model.structure`, else its starting checkpoint's.

    Args:
      config: a train.py config.
      init: the metadata of `train.init`'s converted checkpoint, if any.

    Returns:
      `UniFormerV2` attributes (`variants.structure`); `{}` for the UniFormer family.

    Raises:
      ValueError: a structure that the starting checkpoint does not have, or neither one to go by.
    """
    variant = config.model.variant
    if not is_v2(variant):
        return {}
    given = config.model.get("structure")
    held = init.get("architecture") if init else None
    if given is None and held is None:
        raise ValueError(f"{variant} needs model.structure: set --config.model.structure= one of "
                         f"{', '.join(variants.STRUCTURES)}, or start from a UniFormerV2 checkpoint")
    architecture = variants.structure(given, variant) if given else held
    if held is not None and held != architecture:
        raise ValueError(f"train.init is a UniFormerV2 of structure {held}, model.structure={given} is "
                         f"{architecture}; start from a checkpoint of that structure (a CLIP encoder converted with "
                         f"`python -m convert ... --structure {given}`) or drop --config.model.structure")
    return architecture


def model_of(config, ln_eps: float = 1e-6, architecture: dict | None = None):
    """The model train.py trains: the config's variant with its drop path, compute dtype, remat and frozen stages.

    Args:
      config: a train.py config.
      ln_eps: LayerNorm epsilon of the attention blocks (the starting checkpoint's; UniFormerV2's is CLIP's).
      architecture: a UniFormerV2's structure (`architecture_of`); None: the config's own.

    Returns:
      The Flax module.
    """
    t = config.train
    options = dict(num_classes=config.model.num_classes, drop_path_rate=t.drop_path, dtype=compute_dtype(t.dtype),
                   attention=config.model.attention)
    if is_v2(config.model.variant):  # drop path in the CLIP blocks apart; remat counts blocks
        architecture = architecture_of(config) if architecture is None else architecture
        remat = t.remat
        if not isinstance(remat, int):  # a UniFormer config's per-stage counts (configs/finetune.py's)
            if any(remat):
                raise ValueError(f"train.remat={tuple(remat)} counts blocks per stage; UniFormerV2 has no stages: "
                                 "recompute none, or train with a UniFormerV2 config (configs/*_v2_*.py)")
            remat = 0
        return create_model(config.model.variant, **options, **architecture, remat=remat,
                            backbone_drop_path_rate=t.get("backbone_drop_path", 0.0))
    freeze = freezing.freeze_level(t.freeze)
    return create_model(config.model.variant, ln_eps=ln_eps, **options, remat=tuple(t.remat),
                        frozen_stages=freeze if freeze < freezing.BACKBONE else 0)


class Jitted(NamedTuple):
    step: Callable  # (state, batch) -> (state, metrics); the state is donated
    init: Callable  # variables -> state, laid out by `sharding`
    abstract: TrainState  # the state's shapes
    sharding: TrainState  # the state's shardings


def jit_step(config, model, recipe: Recipe, mesh) -> Jitted:
    """train.py's step and state initialiser, jitted with their shardings over `mesh`, from one optimiser.

    Args:
      config: a train.py config.
      model: `model_of(config)`.
      recipe: `recipe_of(config, ...)`.
      mesh: the `sharding.train_mesh`.

    Returns:
      The `Jitted` step (donating its state), initialiser, and the state's shapes and shardings.
    """
    t = config.train
    tx = recipe.optimizer()
    freeze = freezing.freeze_level(t.freeze)
    init = functools.partial(init_state, tx=tx, seed=t.seed, freeze=freeze)
    abstract = jax.eval_shape(init, abstract_variables(model))
    state_sharding = sharding.fsdp_shardings(abstract, mesh)
    mixing = Mixing(t.mixup, t.cutmix, t.mix_switch, t.label_smoothing, t.mix_group)
    step = make_train_step(model, tx, recipe.schedule(), mixing, t.accumulate, mesh, compute_dtype(t.dtype),
                           freeze, config.data.multi_label)
    jitted = jax.jit(step, in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
                     out_shardings=(state_sharding, sharding.replicated(mesh)), donate_argnums=0)
    return Jitted(jitted, jax.jit(init, out_shardings=state_sharding), abstract, state_sharding)
