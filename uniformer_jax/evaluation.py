"""Multi-view evaluation: views aggregated per video inside the jitted step, exact counts over padded batches;
top-1/top-5 for one label a video, mAP (sklearn's average precision a class) for several."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from uniformer_jax import sharding, storage
from uniformer_jax.data import class_lists, pipelines, sources
from uniformer_jax.data.builder import dataset_dir
from uniformer_jax.models.layers import normalise
from uniformer_jax.models.uniformerv2 import SPECS
from uniformer_jax.models.variants import is_v2
from uniformer_jax.weights import releases
from uniformer_jax.weights.checkpoints import METADATA_FILE

AGGREGATES = ("sum_logits", "mean_softmax")
NAME_BYTES = 512  # video names travel between processes as fixed-width bytes


class ConfigError(ValueError):
    """A config that cannot be evaluated; the message says which field and what to do."""


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How a model is tested: frame sampling, views, how views are aggregated, compute dtype and attention.

    The defaults are Kinetics' (16 frames at rate 4, 4 clips x 1 centre crop, sum of logits, float32).
    """
    sampling: pipelines.Sampling = pipelines.Sampling()
    views: pipelines.TestViews = pipelines.TestViews()
    aggregate: str = "sum_logits"
    dtype: str = "float32"
    attention: str = "xla"
    multi_label: bool = False  # one sigmoid a class, of the views' mean logits

    @classmethod
    def from_config(cls, config) -> Protocol:
        d = config.data
        protocol = cls(pipelines.Sampling(d.num_frames, d.rate, d.mode),
                       pipelines.TestViews(d.clips, d.crops, d.short_side, d.crop_size), config.eval.aggregate,
                       config.model.dtype, config.model.attention, d.multi_label)
        protocol.check()
        return protocol

    @classmethod
    def default(cls, variant: str, multi_label: bool = False) -> Protocol:
        """The protocol of a checkpoint tested without a config: Kinetics' for the UniFormer family (the class
        defaults); for UniFormerV2 its own (spec §4): 8 frames sampled over the whole video, 4 clips x 3 crops of
        the model's input size, the mean of the views' softmax.

        Args:
          variant: the checkpoint's variant.
          multi_label: a multi-label head (views aggregated by their mean logits).

        Returns:
          The protocol.
        """
        if not is_v2(variant):
            return cls(multi_label=multi_label)
        size = SPECS[variant].size
        return cls(pipelines.Sampling(8, 1, "segment"), pipelines.TestViews(4, 3, size, size),
                   "sum_logits" if multi_label else "mean_softmax", multi_label=multi_label)

    def check(self) -> None:
        choices = {"aggregate": (self.aggregate, AGGREGATES), "dtype": (self.dtype, ("float32", "bfloat16")),
                   "attention": (self.attention, ("xla", "cudnn"))}
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"{name} is {value!r}; use one of {', '.join(allowed)}")
        if self.multi_label and self.aggregate != "sum_logits":
            raise ConfigError(f"aggregate {self.aggregate!r} is a softmax over classes; multi-label models are "
                              "tested with sum_logits (one sigmoid a class of the views' mean logits)")

    @property
    def compute_dtype(self):
        return jnp.bfloat16 if self.dtype == "bfloat16" else None


def checkpoint_of(config, workdir: storage.Path | None = None) -> str:
    """What the config evaluates: `checkpoint` if set, else its own release, else the model train.py wrote in
    the work directory (a config of no release, such as configs/finetune.py).

    Args:
      config: an eval.py config.
      workdir: the run's work directory (train.py's, by default the same for the same config).

    Returns:
      A release name, converted directory or `.pth` file.

    Raises:
      ConfigError: none of them.
    """
    checkpoint = config.checkpoint or config.get("release")
    if checkpoint is None and workdir is not None and (workdir / "model" / METADATA_FILE).is_file():
        return str(workdir / "model")
    if checkpoint is None:
        trained = f", or train one into {workdir / 'model'} with train.py" if workdir is not None else ""
        raise ConfigError("set --config.checkpoint (a released model's name, a converted directory or a .pth file)"
                          + trained)
    return checkpoint


def source_of(config) -> str:
    """`data.source` if set, else the config's dataset in the TFDS data directory, where dataset_builder writes.

    Args:
      config: an eval.py or train.py config.

    Returns:
      A dataset directory or DMVR file pattern.

    Raises:
      ConfigError: no dataset of that name has been built; the message gives the command that builds it.
    """
    if config.data.source:
        return config.data.source
    if not config.data.name:
        raise ConfigError("set --config.data.name to the dataset_builder --name of your dataset, or "
                          "--config.data.source to its directory")
    directory = dataset_dir(config.data.name)
    if not sources.is_dataset_dir(directory):
        release = releases.BY_NAME.get(config.get("release"))
        classes = f" --classes {release.classes}" if release and release.classes else ""
        raise ConfigError(f"no dataset {config.data.name!r} in {directory.parents[2]}: build it with `python -m "
                          f"uniformer_jax.dataset_builder --name {config.data.name} --videos DIR --validation LIST"
                          f"{classes}`, or set --config.data.source")
    return str(directory)


def check_model(config, metadata: dict, checkpoint: str) -> None:
    """The config's model must be the checkpoint's: a B config on an S checkpoint is a mistake, not a choice.

    Args:
      config: an eval.py or predict config.
      metadata: the checkpoint's (`checkpoints.read_metadata`).
      checkpoint: what the user named, for the message.

    Raises:
      ConfigError: another variant or class count.
    """
    want, have = (config.model.variant, config.model.num_classes), (metadata["variant"], metadata["num_classes"])
    if want != have:
        raise ConfigError(f"the config is for {want[0]} with {want[1]} classes, but {checkpoint} holds {have[0]} "
                          f"with {have[1]} classes; use the config of that checkpoint, or set --config.model.variant "
                          "and --config.model.num_classes to match it")


def check_classes(checkpoint_names, dataset_names, checkpoint: str, source: str, num_classes: int) -> None:
    """The checkpoint's head rows and the dataset's labels must name the same classes in the same order.

    Args:
      checkpoint_names: the checkpoint's class names, or None.
      dataset_names: the dataset's class names, or None.
      checkpoint: what the user named, for the message.
      source: the dataset, for the message.
      num_classes: the model's class count.

    Raises:
      ConfigError: another class count, or names in another order (re-convert with `--reorder-to`).
    """
    if checkpoint_names is None and dataset_names and len(dataset_names) != num_classes:
        raise ConfigError(f"the dataset {source} has {len(dataset_names)} classes and the checkpoint {checkpoint} "
                          f"{num_classes}: evaluate a checkpoint of this dataset's classes")
    if not checkpoint_names or not dataset_names:
        return
    if [class_lists.canonical(n) for n in checkpoint_names] != [class_lists.canonical(n) for n in dataset_names]:
        first = next((i for i, (a, b) in enumerate(zip(checkpoint_names, dataset_names, strict=False))
                      if class_lists.canonical(a) != class_lists.canonical(b)),
                     min(len(checkpoint_names), len(dataset_names)))
        raise ConfigError(
            f"the checkpoint {checkpoint} orders its {len(checkpoint_names)} classes differently from the dataset "
            f"{source} ({len(dataset_names)} classes; first difference at index {first}: "
            f"{checkpoint_names[first] if first < len(checkpoint_names) else None!r} vs "
            f"{dataset_names[first] if first < len(dataset_names) else None!r}). Re-convert with "
            f"`python -m convert ... --reorder-to <the dataset's class list>`, or the accuracy would be ~0%")


def make_step(model, aggregate: str, dtype=None, multi_label: bool = False):
    """The jitted eval step: every view of a batch of videos through the model, combined per video.

    Args:
      model: the model to evaluate.
      aggregate: `sum_logits` (the original's) or `mean_softmax` (MMAction2's).
      dtype: the compute dtype of the input, None for float32.
      multi_label: scores are each class's sigmoid of the views' mean logit (`aggregate` sum_logits only).

    Returns:
      `step(variables, video (B, V, T, H, W, 3) uint8) -> scores (B, K) float32`.

    Raises:
      ValueError: an unknown `aggregate`.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")

    def step(variables, video):
        b, v = video.shape[:2]
        logits = model.apply(variables, normalise(video.reshape(b * v, *video.shape[2:]), dtype))
        logits = logits.reshape(b, v, -1)
        if multi_label:
            return jax.nn.sigmoid(logits.mean(axis=1))
        if aggregate == "sum_logits":  # the original (SlowFast TestMeter, ENSEMBLE_METHOD sum)
            return logits.sum(axis=1)
        return jax.nn.softmax(logits, axis=-1).mean(axis=1)  # MMAction2's average_clips='prob'

    return jax.jit(step)


def probabilities(scores: np.ndarray, protocol: Protocol, num_views: int) -> np.ndarray:
    """Class probabilities from the eval step's scores (the ranking stays that of the scores).

    Args:
      scores: the step's scores, (K,) or (B, K).
      protocol: how they were aggregated (`sum_logits`, `mean_softmax`; multi-label: sigmoids already).
      num_views: the views summed.

    Returns:
      The probabilities, shaped as `scores`: the softmax of the views' mean logits for `sum_logits`.
    """
    if protocol.multi_label or protocol.aggregate == "mean_softmax":
        return np.asarray(scores)
    return np.asarray(jax.nn.softmax(np.asarray(scores) / num_views, axis=-1))


def encode_names(names) -> np.ndarray:
    """Video names as fixed-width byte rows, which travel between processes as arrays.

    Args:
      names: byte strings.

    Returns:
      (N, NAME_BYTES) uint8, each name truncated to NAME_BYTES and zero-padded.
    """
    out = np.zeros((len(names), NAME_BYTES), np.uint8)
    for row, name in zip(out, names, strict=True):
        raw = bytes(name)[:NAME_BYTES]
        row[:len(raw)] = np.frombuffer(raw, np.uint8)
    return out


def decode_names(rows: np.ndarray) -> list[str]:
    """The names `encode_names` wrote.

    Args:
      rows: (N, NAME_BYTES) uint8.

    Returns:
      The names as text.
    """
    return [bytes(row).rstrip(b"\0").decode("utf-8", "replace") for row in rows]


@dataclasses.dataclass
class Predictions:
    """Every video of the split once, in index order: top-5 classes and scores, and the label (multi-label:
    the multi-hot labels, and every class's probability)."""
    index: np.ndarray
    name: list[str]
    label: np.ndarray
    top5: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray | None = None  # (N, K), multi-label only


def run(model, variables, batches, mesh, protocol: Protocol, progress=None) -> tuple[Predictions, float]:
    """Evaluates every batch on all devices and gathers the predictions of all processes.

    Args:
      model: the model.
      variables: its variables, replicated on `mesh`.
      batches: this process's batches (`pipelines.eval_dataset`).
      mesh: the `sharding.data_mesh`.
      protocol: the test protocol (aggregation, compute dtype).
      progress: called with each batch's video count, e.g. a progress bar's `update`; None: nothing.

    Returns:
      The `Predictions` of every video once, in index order, and clips per second (model and gathering, after
      compilation; input time is not counted).
    """
    step = make_step(model, protocol.aggregate, protocol.compute_dtype, protocol.multi_label)
    replicated = jax.device_put(variables, sharding.replicated(mesh))
    rows = {k: [] for k in ("index", "name", "label", "top5", "scores", "mask")}
    if protocol.multi_label:
        rows["probabilities"] = []
    clips, seconds, compiled = 0, 0.0, None
    for batch in batches:
        names = encode_names(batch.pop("name"))
        video = sharding.global_batch({"video": batch["video"]}, mesh)["video"]
        if compiled is None:  # compile before timing, so clips/s is the steady rate
            compiled = step.lower(replicated, video).compile()
        start = time.perf_counter()
        scores = compiled(replicated, video)
        top_scores, top5 = jax.lax.top_k(scores, min(5, scores.shape[-1]))
        local = {"index": batch["index"], "label": batch["label"], "mask": batch["mask"], "name": names}
        every = {"probabilities": scores} if protocol.multi_label else {}
        gathered = multihost_utils.process_allgather(
            {**sharding.global_batch(local, mesh), "top5": top5, "scores": top_scores, **every}, tiled=True)
        seconds += time.perf_counter() - start
        clips += int(np.asarray(gathered["mask"]).sum()) * batch["video"].shape[1]
        for key, value in gathered.items():
            rows[key].append(np.asarray(value))
        if progress:
            progress(1)
    rate = clips / seconds if seconds else 0.0
    merged = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in rows.items()}
    keep = merged["mask"].astype(bool)
    order = np.argsort(merged["index"][keep])
    names = decode_names(merged["name"][keep])
    kept = {k: merged[k][keep][order] for k in rows if k not in ("name", "mask")}
    return Predictions(name=[names[i] for i in order], **kept), rate


def metrics(predictions: Predictions, num_classes: int) -> dict:
    """Top-1, top-5 and mean per-class top-1 (over the classes present) in percent, and the video count.

    Args:
      predictions: what `run` returned.
      num_classes: the model's class count.

    Returns:
      `{"top1", "top5", "mean_class_top1", "videos"}`.
    """
    label, top5 = predictions.label, predictions.top5
    correct1 = top5[:, 0] == label
    correct5 = (top5 == label[:, None]).any(axis=1)
    present = np.unique(label)
    per_class = [correct1[label == c].mean() for c in present]
    return {"top1": 100 * float(correct1.mean()), "top5": 100 * float(correct5.mean()),
            "mean_class_top1": 100 * float(np.mean(per_class)), "videos": int(len(label)),
            "classes_present": int(len(present)), "num_classes": num_classes}


def average_precision(hot: np.ndarray, scores: np.ndarray) -> float | None:
    """One class's average precision as sklearn's `average_precision_score` defines it: the sum over the
    distinct score thresholds, highest first, of precision times the rise in recall (no interpolation).

    Args:
      hot: whether each video has the class (N,).
      scores: the videos' scores for it (N,).

    Returns:
      The AP, or None where no video has the class.
    """
    order = np.argsort(-scores, kind="stable")
    hot, scores = hot[order].astype(np.float64), scores[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # the last video of each tied run
    true = np.cumsum(hot)[last]
    if not len(true) or true[-1] == 0:
        return None
    precision, recall = true / (last + 1), true / true[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def multi_label_metrics(predictions: Predictions, class_names: list[str]) -> dict:
    """mAP (the mean of the classes' average precision, over the classes some video has) and each class's AP,
    in percent, and the video count.

    Args:
      predictions: what `run` returned for a multi-label protocol.
      class_names: the names of the classes, in head order.

    Returns:
      `{"map", "per_class_ap" (name -> AP, None for a class no video has), "videos", "classes_present",
      "num_classes"}`.
    """
    ap = [average_precision(predictions.label[:, c] > 0, predictions.probabilities[:, c])
          for c in range(len(class_names))]
    present = [a for a in ap if a is not None]
    return {"map": 100 * float(np.mean(present)) if present else None,
            "per_class_ap": {n: None if a is None else 100 * a for n, a in zip(class_names, ap, strict=True)},
            "videos": int(len(predictions.label)), "classes_present": len(present),
            "num_classes": len(class_names)}
