"""Evaluate a UniFormer checkpoint on a video dataset with the paper's multi-view protocol.

    python eval.py --config configs/k400_b32.py

evaluates the config's released model (fetched and converted once, then cached) on the config's dataset as
`python -m uniformer_jax.dataset_builder --name k400 ...` writes it. `--config.checkpoint=` takes another release
name, a converted directory or a .pth file; `--config.data.source=` a dataset directory or a DMVR file pattern.
Runs on every device of every process (add --distributed on each host of a pod or cluster); writes
eval_results.json (with the most confused pairs of classes), predictions.jsonl, config.json, confusion.png (classes
ordered so that confusions cluster) and per_class.png (accuracy per class, sorted) to the work directory (default
runs/<config file name>; a gs:// URL works as well, as does --config.data.source=gs://...).
A config of no release (configs/finetune.py) evaluates the model train.py wrote for it, runs/<config>/model, and
writes beside it, to runs/<config>/eval. A model trained with data.multi_label is scored by mAP (sklearn's average
precision a class, averaged over the classes some video has) and per-class AP, and predictions.jsonl gives every
class's probability.
"""

from __future__ import annotations

from uniformer_jax import console

console.quiet_startup()  # before TensorFlow loads

import json
import sys
from pathlib import Path

import jax
import numpy as np
import tensorflow as tf
from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

from uniformer_jax import evaluation, plots, recipes, sharding, storage
from uniformer_jax.data import class_lists, pipelines, sources, verify
from uniformer_jax.weights import hub, releases
from uniformer_jax.weights.checkpoints import CheckpointError, load_directory, read_metadata

_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file from configs/", lock_config=True)
flags.mark_flags_as_required(["config"])
sharding.define_distributed_flags()


def prediction_lines(predictions: evaluation.Predictions, names: list[str]) -> str:
    if predictions.probabilities is not None:  # multi-label: the video's labels and every class's probability
        return "".join(json.dumps({"index": int(i), "video": name, "labels": [names[c] for c in np.flatnonzero(hot)],
                                   "top5": [names[c] for c in top5],
                                   "probabilities": dict(zip(names, map(float, probs), strict=True))}) + "\n"
                       for i, name, hot, top5, probs in zip(predictions.index, predictions.name, predictions.label,
                                                            predictions.top5, predictions.probabilities, strict=True))
    return "".join(json.dumps({"index": int(i), "video": name, "label": names[label], "top5": [names[c] for c in top5],
                               "scores": [float(s) for s in scores]}) + "\n"
                   for i, name, label, top5, scores in zip(predictions.index, predictions.name, predictions.label,
                                                           predictions.top5, predictions.scores, strict=True))


def paper_top1(config, checkpoint: str) -> float | None:
    """The paper's figure for what was evaluated: a release's own, else the config's."""
    release = releases.BY_NAME.get(checkpoint)
    return release.top1 if release else config.paper.get("top1")


def main(argv):
    del argv
    console.quiet_logging()
    sharding.initialise_distributed()
    config = _CONFIG.value
    workdir = storage.path(config.workdir or f"runs/{Path(flags.FLAGS['config'].config_filename).stem}")
    try:
        source = evaluation.source_of(config)
        checkpoint = evaluation.checkpoint_of(config, workdir)
        directory = hub.resolve(checkpoint, progress=jax.process_index() == 0)
        metadata = read_metadata(directory)
        recipes.complete(config, metadata["variant"], metadata["num_classes"], metadata.get("multi_label", False))
        protocol = evaluation.Protocol.from_config(config)
        evaluation.check_model(config, metadata, checkpoint)
        model, variables = load_directory(directory, dtype=protocol.compute_dtype, attention=protocol.attention)
        mesh = sharding.data_mesh()
        local = pipelines.local_batch_size(config.eval.batch_size, jax.process_count(), jax.local_device_count())
        batches, part, steps = pipelines.eval_dataset(source, config.data.split, batch_size=local,
                                                 sampling=protocol.sampling, views=protocol.views,
                                                 process_index=jax.process_index(),
                                                 process_count=jax.process_count(),
                                                 num_classes=metadata["num_classes"] if protocol.multi_label else None)
        given = class_lists.read_class_names(config.data.class_names) if config.data.class_names else None
        dataset_names = sources.class_names(part, given, source)
        evaluation.check_classes(metadata.get("class_names"), dataset_names, checkpoint, source,
                                 metadata["num_classes"])
    except (evaluation.ConfigError, CheckpointError, pipelines.DataError, ValueError) as e:
        sys.exit(f"error: {e}")
    if storage.path(directory) == workdir / "model":  # train.py's run of this config: the results go beside
        workdir = workdir / "eval"
    lead = jax.process_index() == 0
    try:
        with tqdm(total=steps, desc="eval", unit="step", disable=not lead) as bar:
            predictions, rate = evaluation.run(model, variables, batches.as_numpy_iterator(), mesh, protocol,
                                               progress=bar.update)
    except tf.errors.DataLossError:
        sys.exit(f"error: {verify.damage_report(source, [config.data.split], 'Nothing was written')}")
    names = dataset_names or metadata.get("class_names") or [str(i) for i in range(metadata["num_classes"])]
    scored = (evaluation.multi_label_metrics(predictions, names) if protocol.multi_label
              else evaluation.metrics(predictions, len(names)))
    results = {**scored, "clips_per_second": rate,
               "clips": protocol.views.clips, "crops": protocol.views.crops, "aggregate": protocol.aggregate,
               "dtype": protocol.dtype, "devices": jax.device_count(), "processes": jax.process_count(),
               "checkpoint": checkpoint, "source": source, "split": part.read,
               "paper_top1": paper_top1(config, checkpoint)}
    matrix = None
    if not protocol.multi_label:
        matrix = plots.confusion_matrix(predictions.label, predictions.top5[:, 0], len(names))
        results["most_confused"] = plots.most_confused(matrix, names)
    if lead:  # written once the whole split has been read
        workdir.mkdir(parents=True, exist_ok=True)
        storage.write_whole(workdir / "config.json", config.to_json_best_effort(indent=2) + "\n")
        storage.write_whole(workdir / "predictions.jsonl", prediction_lines(predictions, names))
        if matrix is None:
            plots.plot_per_class(results["per_class_ap"], str(workdir / "per_class.png"), "average precision (%)")
        else:
            plots.plot_confusion(matrix, names, str(workdir / "confusion.png"))
            plots.plot_per_class(plots.per_class_top1(matrix, names), str(workdir / "per_class.png"))
        storage.write_whole(workdir / "eval_results.json", json.dumps(results, indent=2) + "\n")
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
