"""eval.py's plots: the confusion counts against sklearn's, the clustered order, and PNGs for 3 and 400 classes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import confusion_matrix

from uniformer_jax import plots


def predictions(num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and top-1 classes, 80% right, and class 0 taken for the last class a third of the time."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), 6)
    predicted = np.where(rng.random(len(labels)) < 0.8, labels, rng.integers(0, num_classes, len(labels)))
    zero = np.flatnonzero(labels == 0)
    predicted[zero[:2]] = num_classes - 1
    return labels, predicted


def assert_picture(path) -> None:
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # more than a blank page


@pytest.mark.parametrize("num_classes", [3, 400])
def test_plots_for_a_few_and_for_many_classes(tmp_path, num_classes):
    labels, predicted = predictions(num_classes)
    names = [f"class {i}" for i in range(num_classes)]
    matrix = plots.confusion_matrix(labels, predicted, num_classes)
    np.testing.assert_array_equal(matrix, confusion_matrix(labels, predicted, labels=range(num_classes)))
    order = list(plots.cluster_order(matrix))
    assert sorted(order) == list(range(num_classes))
    if num_classes > 3:  # the planted pair (0 taken for the last class) sits side by side
        assert abs(order.index(0) - order.index(num_classes - 1)) == 1
    top = plots.most_confused(matrix, names, count=5)
    off = matrix - np.diag(np.diag(matrix))
    assert [p["videos"] for p in top] == sorted(off.ravel(), reverse=True)[:len(top)]
    assert top[0]["videos"] == off.max() and off[names.index(top[0]["true"]), names.index(top[0]["predicted"])] \
        == off.max()
    plots.plot_confusion(matrix, names, str(tmp_path / "confusion.png"))
    plots.plot_per_class(plots.per_class_top1(matrix, names), str(tmp_path / "per_class.png"))
    assert_picture(tmp_path / "confusion.png")
    assert_picture(tmp_path / "per_class.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png", "per_class.png"]
