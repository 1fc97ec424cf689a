"""Evaluation plots: a confusion matrix whose classes are ordered so that confusions cluster, and accuracy per class.

matplotlib's object-oriented API (`Figure`, no pyplot) renders without a display or a backend choice; scipy's
hierarchical clustering with optimal leaf ordering puts classes that are mistaken for each other side by side.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from uniformer_jax import storage

FULL_LABELS = 50  # up to this many classes the whole matrix carries their names; beyond, a top-confusions panel
PANEL_CLASSES = 24  # classes in that panel: those of the most confused pairs


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of each (true, predicted) pair.

    Args:
      labels: the videos' classes (N,).
      predicted: their top-1 classes (N,).
      num_classes: the matrix's side.

    Returns:
      (K, K) int64, rows the true classes.
    """
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def cluster_order(matrix: np.ndarray) -> np.ndarray:
    """An order of the classes in which those confused with each other are neighbours.

    Average-linkage clustering on a distance that is small for pairs often confused either way (row-normalised
    counts, symmetrised), with the leaves put in the order that minimises the distance between neighbours.

    Args:
      matrix: `confusion_matrix`'s counts.

    Returns:
      A permutation of the K classes.
    """
    k = len(matrix)
    if k < 3:
        return np.arange(k)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    similarity = (rows + rows.T) / 2
    np.fill_diagonal(similarity, 0)
    distance = similarity.max() - similarity + 1e-9  # every pair apart, the most confused pair closest
    np.fill_diagonal(distance, 0)
    condensed = squareform(distance, checks=False)
    tree = hierarchy.optimal_leaf_ordering(hierarchy.linkage(condensed, "average"), condensed)
    return hierarchy.leaves_list(tree)


def most_confused(matrix: np.ndarray, names: list[str], count: int = 10) -> list[dict]:
    """The (true, predicted) pairs of different classes with the most videos.

    Args:
      matrix: `confusion_matrix`'s counts.
      names: the class names.
      count: how many pairs.

    Returns:
      `{"true", "predicted", "videos", "fraction"}` (fraction of the true class's videos), most videos first.
    """
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:count]
    pairs = []
    for t, p in zip(*np.unravel_index(flat, off.shape), strict=True):
        if off[t, p] == 0:
            break
        pairs.append({"true": names[t], "predicted": names[p], "videos": int(off[t, p]),
                      "fraction": float(off[t, p] / matrix[t].sum())})
    return pairs


def _save(figure: Figure, path: str) -> None:
    """Whole or not at all (local or a URL): the previous file stays if rendering stops."""
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=100)
    storage.write_whole(path, png.getvalue())


def _matrix_panel(axes, rows: np.ndarray, names: list[str] | None, title: str) -> None:
    image = axes.imshow(rows, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    axes.set_title(title)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if names is None:
        axes.set_xticks([])
        axes.set_yticks([])
    else:
        axes.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
        axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")


def plot_confusion(matrix: np.ndarray, names: list[str], path: str) -> None:
    """Writes the confusion matrix (row-normalised, clustered order) as a PNG.

    Up to `FULL_LABELS` classes, one named matrix; beyond, the whole matrix unnamed beside a named panel of the
    classes in the most confused pairs.

    Args:
      matrix: `confusion_matrix`'s counts.
      names: the class names.
      path: the PNG to write.
    """
    order = cluster_order(matrix)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    if len(names) <= FULL_LABELS:
        side = max(5.0, 0.22 * len(names) + 3)
        figure = Figure(figsize=(side + 1, side), layout="constrained")
        _matrix_panel(figure.add_subplot(), rows[np.ix_(order, order)], [names[i] for i in order],
                      f"confusion ({int(matrix.sum())} videos, {len(names)} classes)")
        _save(figure, path)
        return
    figure = Figure(figsize=(18, 8.5), layout="constrained")
    whole, panel = figure.subplots(1, 2)
    _matrix_panel(whole, rows[np.ix_(order, order)], None,
                  f"confusion, {len(names)} classes in clustered order ({int(matrix.sum())} videos)")
    picked = []
    for pair in most_confused(matrix, names, count=len(names)):
        for name in (pair["true"], pair["predicted"]):
            if name not in picked and len(picked) < PANEL_CLASSES:
                picked.append(name)
    index = {name: i for i, name in enumerate(names)}
    chosen = sorted((index[n] for n in picked), key=list(order).index)
    _matrix_panel(panel, rows[np.ix_(chosen, chosen)], [names[i] for i in chosen],
                  f"the {len(chosen)} classes of the most confused pairs")
    _save(figure, path)


def plot_per_class(scores: dict[str, float | None], path: str, measure: str = "top-1 accuracy (%)") -> None:
    """Writes each class's score, sorted, as a PNG; classes without videos are left out.

    Up to `FULL_LABELS` classes, one named bar each; beyond, every class's bar unnamed, the ten lowest named.

    Args:
      scores: class name -> score (None: no video of the class).
      path: the PNG to write.
      measure: the axis label.
    """
    items = sorted(((v, n) for n, v in scores.items() if v is not None), key=lambda item: (item[0], item[1]))
    values, labels = [v for v, _ in items], [n for _, n in items]
    mean = float(np.mean(values)) if values else 0.0
    if len(items) <= FULL_LABELS:
        figure = Figure(figsize=(8, max(3.0, 0.25 * len(items) + 1.5)), layout="constrained")
        axes = figure.add_subplot()
        axes.barh(range(len(values)), values, color="tab:blue")
        axes.set_yticks(range(len(labels)), labels, fontsize=8)
        axes.set_xlabel(measure)
        axes.axvline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.1f}")
    else:
        figure = Figure(figsize=(14, 6), layout="constrained")
        axes = figure.add_subplot()
        axes.bar(range(len(values)), values, width=1.0, color="tab:blue")
        axes.set_xticks([])
        axes.set_xlabel(f"{len(values)} classes, sorted")
        axes.set_ylabel(measure)
        axes.axhline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.1f}")
        lowest = "\n".join(f"{v:5.1f}  {n}" for v, n in items[:10])
        axes.text(0.01, 0.98, "lowest:\n" + lowest, transform=axes.transAxes, va="top", fontsize=8,
                  family="monospace", bbox={"facecolor": "white", "alpha": 0.85})
    axes.set_title(f"{measure} per class")
    axes.legend(loc="lower right")
    _save(figure, path)


def per_class_top1(matrix: np.ndarray, names: list[str]) -> dict[str, float | None]:
    """Each class's top-1 accuracy in percent from the confusion counts.

    Args:
      matrix: `confusion_matrix`'s counts.
      names: the class names.

    Returns:
      name -> accuracy, None for a class without videos.
    """
    totals = matrix.sum(axis=1)
    return {n: (100 * float(matrix[i, i] / totals[i]) if totals[i] else None) for i, n in enumerate(names)}
