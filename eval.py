"""Evaluate a converted UniFormer checkpoint on a video dataset with the paper's multi-view protocol.

    python eval.py --config configs/k400_b32.py --config.checkpoint=ckpt/b32_k400 \
        --config.data.source=/data/tfds/video_classification/k400/1.0.0

Runs on every device of every process; writes eval_results.json, predictions.jsonl and config.json to the
work directory (default runs/<config file name>).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

from uniformer_jax import data, evaluation, labels, load_pretrained, sharding
from uniformer_jax.checkpoints import CheckpointError, read_metadata

_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file from configs/", lock_config=True)
flags.mark_flags_as_required(["config"])


class ConfigError(ValueError):
    """A config that cannot be evaluated; the message says which field and what to do."""


def check_config(config) -> None:
    missing = [f"--config.{k}" for k in ("checkpoint", "data.source")
               if config.get(k.split(".")[0]) is None or (k == "data.source" and config.data.source is None)]
    if missing:
        raise ConfigError(f"set {' and '.join(missing)} (a `python -m convert` output and a dataset directory)")
    if config.eval.aggregate not in evaluation.AGGREGATES:
        raise ConfigError(f"--config.eval.aggregate must be one of {evaluation.AGGREGATES}")
    if config.model.dtype not in ("float32", "bfloat16"):
        raise ConfigError("--config.model.dtype must be float32 or bfloat16")


def check_classes(checkpoint_names, dataset_names, checkpoint: str, source: str) -> None:
    """The checkpoint's head rows and the dataset's labels must name the same classes in the same order."""
    if not checkpoint_names or not dataset_names:
        return
    if [labels.normalise(n) for n in checkpoint_names] != [labels.normalise(n) for n in dataset_names]:
        first = next((i for i, (a, b) in enumerate(zip(checkpoint_names, dataset_names))
                      if labels.normalise(a) != labels.normalise(b)), min(len(checkpoint_names), len(dataset_names)))
        raise ConfigError(
            f"the checkpoint {checkpoint} orders its {len(checkpoint_names)} classes differently from the dataset "
            f"{source} ({len(dataset_names)} classes; first difference at index {first}). Re-convert with "
            f"`python -m convert ... --reorder-to <the dataset's class list>`, or the accuracy would be ~0%")


def main(argv):
    del argv
    config = _CONFIG.value
    try:
        check_config(config)
        meta = read_metadata(config.checkpoint)
        dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else None
        model, variables = load_pretrained(config.checkpoint, dtype=dtype, attention=config.model.attention)
        sampling = data.Sampling(config.data.num_frames, config.data.rate, config.data.mode)
        views = data.TestViews(config.data.clips, config.data.crops, config.data.short_side, config.data.crop_size)
        mesh = sharding.data_mesh()
        local = data.local_batch_size(config.eval.batch_size, jax.process_count(), jax.local_device_count())
        batches, part, steps = data.eval_dataset(config.data.source, config.data.split, batch_size=local,
                                                 sampling=sampling, views=views,
                                                 process_index=jax.process_index(),
                                                 process_count=jax.process_count())
        dataset_names = part.class_names or (labels.read_class_names(config.data.class_names)
                                             if config.data.class_names else None)
        check_classes(meta.get("class_names"), dataset_names, config.checkpoint, config.data.source)
    except (ConfigError, CheckpointError, data.DataError, ValueError) as e:
        sys.exit(f"error: {e}")
    workdir = Path(config.workdir or Path("runs") / Path(flags.FLAGS["config"].config_filename).stem)
    lead = jax.process_index() == 0
    if lead:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
    with tqdm(total=steps, desc="eval", unit="step", disable=not lead) as bar:
        predictions, rate = evaluation.run(model, variables, batches.as_numpy_iterator(), mesh,
                                           config.eval.aggregate, dtype, progress=bar.update)
    names = dataset_names or [str(i) for i in range(config.model.num_classes)]
    results = {**evaluation.metrics(predictions, len(names)), "clips_per_second": rate,
               "views": f"{config.data.crops}x{config.data.clips}", "aggregate": config.eval.aggregate,
               "checkpoint": config.checkpoint, "source": config.data.source, "split": config.data.split,
               "paper_top1": config.paper.get("top1")}
    if lead:
        with open(workdir / "predictions.jsonl", "w") as f:
            for i, name, label, top5, scores in zip(predictions.index, predictions.name, predictions.label,
                                                    predictions.top5, predictions.scores):
                f.write(json.dumps({"index": int(i), "video": name, "label": names[label],
                                    "top5": [names[c] for c in top5], "scores": [float(s) for s in scores]}) + "\n")
        (workdir / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
