"""Datasets from folders of classes: both layouts, the stratified validation split, strays and refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow_datasets as tfds
from videos import write_video

from uniformer_jax.data.builder import BuildError, build
from uniformer_jax.data.class_folders import FolderError

REPO = Path(__file__).resolve().parents[1]
CLASSES = {"walking": 5, "jumping": 5, "Waving_Hands": 3}


def tree(root: Path, counts: dict[str, int], split: str = "") -> Path:
    for name, count in counts.items():
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(count):
            write_video(folder / f"{name.lower()}_{i}.mp4", 6, width=48, height=40)
    return root


def examples(builder, split: str) -> list[tuple[str, int]]:
    ds = tfds.builder_from_directory(builder.data_dir).as_dataset(split=split)
    return sorted((e["name"].decode(), int(e["label"])) for e in tfds.as_numpy(ds))


def build_folders(videos: Path, out: Path, **kwargs):
    return build("clips", str(videos), {}, str(out), short_side=32, workers=2, **kwargs)


def test_class_folders_split_each_class_the_same_way_for_a_seed(tmp_path):
    videos = tree(tmp_path / "clips", CLASSES)
    (videos / "walking" / "notes.txt").write_text("not a video")
    (videos / "jumping" / ".DS_Store").write_bytes(b"\0")
    builder = build_folders(videos, tmp_path / "a", val_fraction=0.4, seed=3)
    names = builder.info.features["label"].names
    assert names == sorted(CLASSES)  # folder names, sorted (upper case first, as Python sorts)
    train, val = examples(builder, "train"), examples(builder, "validation")
    assert not {n for n, _ in train} & {n for n, _ in val}
    for label, name in enumerate(names):
        held = sum(lab == label for _, lab in val)
        assert held == round(CLASSES[name] * 0.4)  # 2, 2, 1: stratified
        assert all(n.startswith(name + "/") for n, lab in train + val if lab == label)
    assert len(train) + len(val) == sum(CLASSES.values())
    skipped = (Path(builder.data_dir) / "skipped-train.tsv").read_text().splitlines()
    assert skipped == ["walking/notes.txt\tnot a video file (.txt)"]  # the hidden file is ignored

    again = build_folders(videos, tmp_path / "b", val_fraction=0.4, seed=3)
    other = build_folders(videos, tmp_path / "c", val_fraction=0.4, seed=4)
    assert examples(again, "validation") == val
    assert examples(other, "validation") != val
    assert [sum(lab == k for _, lab in examples(other, "validation")) for k in range(3)] == [1, 2, 2]


def test_split_folders_are_the_splits_and_a_class_list_sets_the_order(tmp_path):
    videos = tree(tmp_path / "ucf", {"walking": 2, "jumping": 2}, "train")
    tree(videos, {"walking": 1, "jumping": 1}, "test")
    (tmp_path / "classes.txt").write_text("walking\njumping\n")
    builder = build_folders(videos, tmp_path / "tfds", classes=str(tmp_path / "classes.txt"))
    assert set(builder.info.splits) == {"train", "test"}
    assert builder.info.features["label"].names == ["walking", "jumping"]
    assert examples(builder, "test") == [("test/jumping/jumping_0.mp4", 1), ("test/walking/walking_0.mp4", 0)]
    with pytest.raises(FolderError, match="has its own splits"):
        build("other", str(videos), {}, str(tmp_path / "x"), val_fraction=0.1)


def test_trees_that_are_no_dataset_are_refused_with_the_folder_named(tmp_path):
    videos = tree(tmp_path / "clips", {"walking": 2})
    (videos / "empty").mkdir()
    with pytest.raises(FolderError, match=r"class folder .*empty holds no video files"):
        build_folders(videos, tmp_path / "tfds")
    with pytest.raises(BuildError, match="with list files"):
        build("clips", str(videos), {"train": str(tmp_path / "list.csv")}, str(tmp_path / "tfds"), seed=1)
    result = subprocess.run([sys.executable, "-m", "uniformer_jax.dataset_builder", "--name", "clips", "--videos",
                             str(videos), "--out", str(tmp_path / "tfds")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"error: class folder {videos / 'empty'} holds no video files (.avi, .flv, .m4v, .mkv, .mov, .mp4, .webm); "
        "add videos or remove the folder"]
    assert not (tmp_path / "tfds" / "video_classification" / "clips" / "1.0.0").exists()
