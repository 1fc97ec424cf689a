"""Train UniFormer with the original recipe on a video dataset, on every device of every process.

    python train.py --config configs/k400_s16.py --config.train.init=in1k_s

trains on the config's dataset as `python -m uniformer_jax.dataset_builder --name k400 ...` writes it (or
--config.data.source), from a released model's weights (fetched and converted once, then cached), a converted
directory or a .pth file.

Work directory (default runs/<config name>): checkpoints/ (Orbax, resumed from automatically), metrics.jsonl,
tensorboard/, config.json, and model/ at the end: the trained weights as a converted checkpoint for eval.py
and predict. Saves every `train.checkpoint_every` steps, after each validation and on SIGTERM before exiting.
Add --distributed on each host of a pod or cluster; --config.train.dry_run=True compiles the step on the devices
and prints its memory per device, then exits (python -m uniformer_jax.aot does so for a TPU pod from anywhere).
"""

from __future__ import annotations

from uniformer_jax import console

console.quiet_startup()  # before TensorFlow loads

import functools
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

import jax
import orbax.checkpoint as ocp
import tensorflow as tf
from absl import app, flags
from flax import traverse_util
from jax.experimental import multihost_utils
from ml_collections import config_flags
from tqdm import tqdm

from uniformer_jax import evaluation, recipes, sharding, step_analysis, storage, training
from uniformer_jax.data import class_lists, pipelines, sources, verify
from uniformer_jax.models.uniformerv2 import LN_EPS
from uniformer_jax.models.variants import init_input, is_v2, new_heads
from uniformer_jax.weights import hub
from uniformer_jax.weights.checkpoints import (
    METADATA_FILE,
    CheckpointError,
    load_directory,
    read_metadata,
    remove_leftovers,
    save_pretrained,
    train_manager,
)

_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file from configs/", lock_config=True)
flags.mark_flags_as_required(["config"])
sharding.define_distributed_flags()


class TrainingError(RuntimeError):
    """The run cannot go on; the message says why and what is kept."""


class Plan:
    """Everything a run needs, checked before any compute."""

    def __init__(self, config):
        t = config.train
        self.source = evaluation.source_of(config)
        self.init_dir = hub.resolve(t.init, progress=jax.process_index() == 0) if t.init else None
        self.init = read_metadata(self.init_dir) if t.init else None
        recipes.complete(config, self.init["variant"] if self.init else None)
        training.check_layout(config, jax.device_count())
        self.local_batch = pipelines.local_batch_size(t.batch_size, jax.process_count(), jax.local_device_count())
        shards = t.input_shards or jax.process_count()
        if shards % jax.process_count() or self.local_batch % (shards // jax.process_count()):
            raise evaluation.ConfigError(
                f"train.input_shards={shards} must be a multiple of the {jax.process_count()} process(es) and "
                f"give each the same share of its {self.local_batch} clips")
        # Layer scale is new in fine-tuning (Sense-X's `_ls` models start from ImageNet weights without it).
        if self.init and self.init["variant"] not in (config.model.variant, config.model.variant.removesuffix("_ls")):
            raise evaluation.ConfigError(f"train.init {t.init} holds {self.init['variant']}, the config trains "
                                         f"{config.model.variant}")
        self.sampling = pipelines.Sampling(config.data.num_frames, config.data.rate, config.data.mode)
        self.aug = pipelines.TrainAugment(crop_size=t.crop_size, crop_scale=tuple(t.crop_scale), flip=t.flip,
                                     randaugment=t.randaugment, randaugment_policy=t.randaugment_policy,
                                     erasing=t.erasing, repeats=t.repeats)
        self.train_part = sources.open_split(self.source, t.split, process_index=jax.process_index(),
                                          process_count=jax.process_count())
        given = class_lists.read_class_names(config.data.class_names) if config.data.class_names else None
        self.class_names = sources.class_names(self.train_part, given, self.source)
        classes = len(self.class_names or ())  # DMVR records without `clip/label/text` name no classes
        if config.model.num_classes is None:  # a fine-tuning config: the dataset's
            if not classes:
                raise evaluation.ConfigError(f"{self.source} names no classes: set --config.model.num_classes")
            config.model.num_classes = classes
        if classes and classes != config.model.num_classes:
            raise evaluation.ConfigError(f"the {t.split} split has {classes} classes and model.num_classes is "
                                         f"{config.model.num_classes}; set --config.model.num_classes={classes}")
        # Multi-label targets are multi-hot vectors of the model's classes; one label a video, the class index.
        self.label_classes = config.model.num_classes if config.data.multi_label else None
        pipelines.label_of(self.train_part, self.source, self.label_classes)  # refuses multi-label data unasked
        self.validate = bool(t.val_every)
        if self.validate:
            self.val_batch = pipelines.local_batch_size(t.val_batch_size, jax.process_count(), jax.local_device_count())
            sources.open_split(self.source, t.val_split)  # fails now, not after hours of training
        videos = sum(self.train_part.counts)
        self.steps_per_epoch = training.steps_per_epoch(videos, t.repeats, t.batch_size)
        self.recipe = training.recipe_of(config, self.steps_per_epoch)
        self.total_steps = self.recipe.total_steps
        self.ln_eps = self.init["ln_eps"] if self.init else (LN_EPS if is_v2(config.model.variant) else 1e-6)
        self.architecture = training.architecture_of(config, self.init)
        self.model = training.model_of(config, self.ln_eps, self.architecture)


def initial_variables(plan: Plan, config) -> dict:
    """From train.init (its heads replaced when the class count differs; layer scale it lacks at its initial
    value), or random as the original initialises."""
    def fresh():
        return jax.jit(plan.model.init)(jax.random.key(config.train.seed), init_input(plan.model))

    if not plan.init:
        return fresh()
    _, variables = load_directory(plan.init_dir)
    if plan.init["variant"] != config.model.variant:
        flat = traverse_util.flatten_dict(fresh())
        flat.update(traverse_util.flatten_dict(variables))
        variables = traverse_util.unflatten_dict(flat)
    if plan.init["num_classes"] != config.model.num_classes:
        variables["params"].update(new_heads(jax.random.key(config.train.seed), config.model.variant,
                                             config.model.num_classes))
    return variables


class Stop:
    """SIGTERM (preemption) asks the loop to save and leave at the next step that all processes agree on."""

    def __init__(self):
        self.asked = False
        if jax.process_count() == 1:  # with jax.distributed, its preemption notifier catches SIGTERM
            signal.signal(signal.SIGTERM, self._ask)

    def _ask(self, *_):
        self.asked = True

    def now(self, step: int) -> bool:
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.asked


class Log:
    """Metrics to metrics.jsonl and TensorBoard, from process 0 only."""

    def __init__(self, workdir: Path, lead: bool):
        self.lead = lead
        if lead:
            self.file = storage.open_append(workdir / "metrics.jsonl")
            self.writer = tf.summary.create_file_writer(str(workdir / "tensorboard"))

    def write(self, step: int, metrics: dict) -> None:
        if not self.lead:
            return
        self.note(step, metrics)
        with self.writer.as_default(step=step):
            for name, value in metrics.items():
                tf.summary.scalar(name, value)
        self.writer.flush()

    def note(self, step: int, record: dict) -> None:
        """A record of `step` in metrics.jsonl alone (not figures for TensorBoard)."""
        if self.lead:
            self.file.write(json.dumps({"step": step, **record}) + "\n")
            self.file.flush()


class Skips:
    """Damaged training records skipped (`data.skip_corrupt`): reported by the input's threads as they meet them,
    ahead of training, and logged with the step they fall before once training reaches it."""

    def __init__(self):
        self.lock, self.waiting, self.count = threading.Lock(), [], 0

    def __call__(self, file: str, offset: int, step: int) -> None:
        with self.lock:
            self.waiting.append((step, file, offset))

    def log(self, step: int, log: Log, bar: tqdm) -> None:
        """Logs the skips before or at `step`: one metrics.jsonl record and one printed line each."""
        with self.lock:
            due = sorted(s for s in self.waiting if s[0] <= step)
            self.waiting = [s for s in self.waiting if s[0] > step]
        for at, file, offset in due:
            self.count += 1
            log.note(at, {"skipped": file, "offset": offset})
            bar.write(f"skipped a damaged record: {file} at byte {offset}, before step {at} "
                      f"({self.count} skipped{'' if jax.process_count() == 1 else ' by this process'})",
                      file=sys.stderr)


def validate(plan: Plan, config, mesh, state) -> dict:
    """Top-1 and top-5 (mAP for multi-label data) of 1 clip x 1 centre crop a validation video."""
    views = pipelines.TestViews(1, 1, config.data.short_side, config.data.crop_size)
    batches, _, _ = pipelines.eval_dataset(plan.source, config.train.val_split, batch_size=plan.val_batch,
                                      sampling=plan.sampling, views=views, process_index=jax.process_index(),
                                      process_count=jax.process_count(), num_classes=plan.label_classes)
    protocol = evaluation.Protocol(plan.sampling, views, dtype=config.train.dtype, attention=config.model.attention,
                                   multi_label=config.data.multi_label)
    model = plan.model.clone(drop_path_rate=0.0, remat=(0, 0, 0, 0))
    predictions, _ = evaluation.run(model, {"params": state.params, "batch_stats": state.batch_stats},
                                    batches.as_numpy_iterator(), mesh, protocol)
    if config.data.multi_label:
        names = plan.class_names or [str(i) for i in range(config.model.num_classes)]
        return {"val_map": evaluation.multi_label_metrics(predictions, names)["map"]}
    results = evaluation.metrics(predictions, config.model.num_classes)
    return {"val_top1": results["top1"], "val_top5": results["top5"]}


def keep_metrics_until(workdir: Path, step: int) -> None:
    """Drops the records past `step` (logged before a kill, to be logged again) from metrics.jsonl and the
    TensorBoard event files, so each step has one record. Each file is rewritten whole or not at all."""
    path = workdir / "metrics.jsonl"
    if path.is_file():
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        if len(kept) != len(lines):
            _replace_file(path, lambda partial: partial.write_text("".join(kept)))
    for events in (workdir / "tensorboard").glob("events.out.tfevents.*"):
        records = [bytes(r) for r in tf.data.TFRecordDataset(str(events)).as_numpy_iterator()]
        kept = [r for r in records if tf.compat.v1.Event.FromString(r).step <= step]
        if len(kept) != len(records):
            _replace_file(events, functools.partial(_write_records, records=kept))


def _write_records(path: Path, records: list[bytes]) -> None:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def _replace_file(path: Path, write) -> None:
    partial = path.with_name(f".{path.name.split('.')[0]}.partial")  # no "tfevents" in it: TensorBoard skips it
    write(partial)
    partial.replace(path)


def check_finite(step: int, metrics, manager) -> None:
    loss = float(metrics["loss"])
    if not math.isfinite(loss):
        last = manager.latest_step()
        kept = f"the last good checkpoint (step {last}) is kept" if last is not None else "no checkpoint was written"
        raise TrainingError(f"the loss is {loss} at step {step}; stopping, {kept}. Lower train.lr or raise "
                            "train.warmup_epochs and run again")


def restore(manager, abstract, shardings) -> training.TrainState:
    """The latest checkpoint of the work directory, laid out for this run's mesh."""
    step = manager.latest_step()
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(target))
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise CheckpointError(f"cannot resume from {manager.directory / str(step)}: it does not hold this run's "
                              f"model and optimiser state ({str(e).splitlines()[0][:300]}). Give this run its own "
                              "--config.workdir, or remove that step to resume from an earlier one") from None


def dry_run(config, plan: Plan) -> None:
    """The run's own step compiled for every device of every process, before its input pipeline starts or any
    weights are loaded; its memory report, then exit. With a persistent compilation cache
    (JAX_COMPILATION_CACHE_DIR) the run that follows finds the step compiled."""
    devices = jax.devices()
    try:
        chip = step_analysis.local_chip(devices)
        report = step_analysis.compile_step(config, devices, "train", chip, plan.model, plan.recipe)
    except step_analysis.AotError as e:
        sys.exit(f"error: {e}")
    if jax.process_index() == 0:
        name = Path(flags.FLAGS["config"].config_filename).stem
        print(step_analysis.format_report(report, f"{name} train step (dry run)"), flush=True)
    if report["fits"] is False:
        sys.exit("error: the step does not fit in device memory; find settings that do with "
                 "`python -m uniformer_jax.aot --search`, or raise train.accumulate or train.remat")


def main(argv):
    del argv
    console.quiet_logging()
    sharding.initialise_distributed()
    config = _CONFIG.value
    try:
        plan = Plan(config)
    except (evaluation.ConfigError, CheckpointError, pipelines.DataError, ValueError) as e:
        sys.exit(f"error: {e}")
    if config.train.dry_run:
        dry_run(config, plan)
        return
    lead = jax.process_index() == 0
    workdir = storage.absolute(config.workdir or f"runs/{Path(flags.FLAGS['config'].config_filename).stem}")
    t = config.train
    try:
        mesh = sharding.train_mesh(t.fsdp)
    except ValueError as e:
        sys.exit(f"error: {e}")
    jitted = training.jit_step(config, plan.model, plan.recipe, mesh)
    manager = train_manager(workdir / "checkpoints", t.keep)
    if lead:
        remove_leftovers(workdir / "model")
    try:
        if manager.latest_step() is not None:
            state = restore(manager, jitted.abstract, jitted.sharding)
        else:
            state = jitted.init(initial_variables(plan, config))
    except CheckpointError as e:
        sys.exit(f"error: {e}")
    first = int(state.step)
    if lead:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
        keep_metrics_until(workdir, first)
        if first:
            print(f"resumed from step {first} ({manager.directory / str(first)})", flush=True)
    skips = Skips() if config.data.skip_corrupt else None
    batches = pipelines.train_dataset(plan.source, t.split, batch_size=plan.local_batch, sampling=plan.sampling,
                                 aug=plan.aug, seed=t.seed, process_index=jax.process_index(),
                                 process_count=jax.process_count(), shards=t.input_shards,
                                 start=first * plan.local_batch, shuffle_buffer=t.shuffle_buffer,
                                 num_classes=plan.label_classes, on_skip=skips)
    log, stop = Log(workdir, lead), Stop()
    # The validation figure printed, and kept with each checkpoint to keep the best one by.
    measure, measure_key, best_key = ("mAP", "val_map", "map") if config.data.multi_label else ("top-1", "val_top1",
                                                                                              "top1")
    saved = first
    previous = None
    bar = tqdm(total=plan.total_steps, initial=first, desc="train", unit="step", disable=not lead)
    tick, ticked = time.perf_counter(), first
    try:
        for step, batch in zip(range(first + 1, plan.total_steps + 1), batches.as_numpy_iterator(), strict=False):
            state, metrics = jitted.step(state, sharding.global_batch(batch, mesh))
            if previous is not None:  # one step behind, so the device always has work queued
                check_finite(step - 1, previous, manager)
            previous = metrics
            bar.update()
            if skips:
                skips.log(step, log, bar)
            stats = None
            if step % t.log_every == 0 or step == plan.total_steps:
                check_finite(step, metrics, manager)
                now = time.perf_counter()
                stats = {k: float(v) for k, v in metrics.items()}
                stats["clips_per_second"] = (step - ticked) * t.batch_size / (now - tick)
                tick, ticked = now, step
                bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{stats['lr']:.2e}",
                                clips_s=f"{stats['clips_per_second']:.1f}")
            validated = plan.validate and (step % t.val_every == 0 or step == plan.total_steps)
            if validated:
                stats = {**(stats or {}), **validate(plan, config, mesh, state)}
                bar.write(f"step {step}: validation {measure} {stats[measure_key]:.2f}%")
            if stats:
                log.write(step, stats)
            preempted = stop.now(step)
            if validated or preempted or step % t.checkpoint_every == 0 or step == plan.total_steps:
                check_finite(step, metrics, manager)
                manager.save(step, args=ocp.args.StandardSave(state),
                             metrics={best_key: stats[measure_key]} if validated else None, force=True)
                saved = step
            if preempted:
                manager.wait_until_finished()
                bar.close()
                print(f"stopped by SIGTERM at step {step}; saved, run the same command to continue", flush=True)
                return
    except TrainingError as e:
        bar.close()
        manager.wait_until_finished()
        sys.exit(f"error: {e}")
    except tf.errors.DataLossError:  # a damaged record in the training or validation split
        bar.close()
        manager.wait_until_finished()
        splits = [t.split, config.data.split] if plan.validate else [t.split]
        kept = f"The checkpoints to step {saved} are kept" if saved else "No checkpoint was saved"
        hint = "" if config.data.skip_corrupt else "; --config.data.skip_corrupt=True trains past damaged records"
        sys.exit(f"error: {verify.damage_report(plan.source, splits, kept)}{hint}")
    bar.close()
    manager.wait_until_finished()
    # A finished run started again has nothing new: its model/ stays as it is (unless a kill came before it).
    if saved == plan.total_steps and (first < plan.total_steps or not (workdir / "model" / METADATA_FILE).is_file()):
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        save_pretrained(workdir / "model", variables, {
            "variant": config.model.variant, "num_classes": config.model.num_classes, "ln_eps": plan.ln_eps,
            "class_names": plan.class_names, "multi_label": config.data.multi_label, "source_form": "train.py",
            "source_file": str(workdir), **({"architecture": plan.architecture} if plan.architecture else {}),
            "steps": plan.total_steps}, overwrite=True)
        if lead:
            print(f"trained {plan.total_steps} steps; model written to {workdir / 'model'}", flush=True)


if __name__ == "__main__":
    app.run(main)
