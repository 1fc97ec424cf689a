"""Datasets laid out as folders of classes, the way users keep their clips (UCF101, HMDB51, ImageFolder).

Two layouts are read: `DIR/<class>/<video>`, whose videos are split into training and validation by a
fraction of each class (stratified, and deterministic for a seed), and `DIR/train/<class>/<video>` beside
`DIR/val|validation|test/<class>/<video>`, whose splits are the folders. Class names are the folder names,
sorted, unless a class list gives them (and their order). Videos may sit in sub-folders of a class folder.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import NamedTuple

from uniformer_jax.data import class_lists

VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv"}
SPLIT_FOLDERS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


class FolderError(ValueError):
    """A folder tree that is no dataset; the message names the folder and what to do."""


class Found(NamedTuple):
    path: str  # relative to the videos folder
    label: int | None  # None: the file cannot be used, for `problem`
    problem: str | None = None


def _visible(folder: Path) -> list[Path]:
    """What a folder holds, less hidden entries (`.DS_Store`, `.git`)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _split_folders(root: Path) -> dict[str, Path] | None:
    """The split folders of a `train` + `val|validation|test` tree, or None for a tree of class folders."""
    names = {p.name for p in _visible(root) if p.is_dir()}
    if "train" not in names or not names & {"val", "validation", "test"}:
        return None
    if {"val", "validation"} <= names:
        raise FolderError(f"{root} has both val/ and validation/; keep one of them as the validation split")
    others = sorted(names - set(SPLIT_FOLDERS))
    if others:
        raise FolderError(f"{root} has split folders (train/ ...) and also {', '.join(others)}/; move those into "
                          "a split, or give --videos one folder of class folders")
    return {SPLIT_FOLDERS[name]: root / name for name in sorted(names)}


def _classes(split_dirs: dict[str, Path], given: list[str] | None) -> list[str]:
    folders = sorted({p.name for d in split_dirs.values() for p in _visible(d) if p.is_dir()})
    if not folders:
        raise FolderError(f"{' and '.join(map(str, split_dirs.values()))}: no class folders (expected "
                          "<class>/<video> inside)")
    if given is None:
        return folders
    known = {class_lists.canonical(n) for n in given}
    unknown = [f for f in folders if class_lists.canonical(f) not in known]
    if unknown:
        raise FolderError(f"class folders {unknown} are not among the {len(given)} classes of --classes")
    return given


def _scan(split_dir: Path, root: Path, index: dict[str, int]) -> dict[str, list[Found]]:
    """{class folder name: its files as `Found`} of one split folder; files outside class folders too ('')."""
    out: dict[str, list[Found]] = {}
    for entry in _visible(split_dir):
        if entry.is_file():
            out.setdefault("", []).append(Found(str(entry.relative_to(root)), None, "not in a class folder"))
            continue
        label = index[class_lists.canonical(entry.name)]
        found = []
        for file in _files(entry):
            relative = str(file.relative_to(root))
            suffix = file.suffix.lower()
            found.append(Found(relative, label) if suffix in VIDEO_SUFFIXES else
                         Found(relative, None, f"not a video file ({suffix or 'no suffix'})"))
        if not any(f.label is not None for f in found):
            raise FolderError(f"class folder {entry} holds no video files ({', '.join(sorted(VIDEO_SUFFIXES))}); "
                              "add videos or remove the folder")
        out[entry.name] = found
    return out


def _stratified(by_class: dict[str, list[Found]], fraction: float, seed: int) -> dict[str, list[Found]]:
    """Each class's videos split into training and validation: a `fraction` of each class (at least one video
    where the class has two or more, never all), picked by a shuffle seeded with `seed` and the class name, so
    that the split of a class does not change when other classes do."""
    splits: dict[str, list[Found]] = {"train": [], "validation": []}
    for name, found in by_class.items():
        videos = [f for f in found if f.label is not None]
        splits["train"] += [f for f in found if f.label is None]  # reported with the training split
        random.Random(f"{seed}/{name}").shuffle(videos)
        held = min(len(videos) - 1, max(1, round(len(videos) * fraction))) if fraction and len(videos) > 1 else 0
        splits["validation"] += videos[:held]
        splits["train"] += videos[held:]
    return {split: sorted(found) for split, found in splits.items() if found}


def read_class_folders(root: Path, class_names: list[str] | None, val_fraction: float | None = None,
                       seed: int | None = None) -> tuple[dict[str, list[Found]], list[str]]:
    """The videos of a tree of class folders, by split, and the class names.

    Args:
      root: `DIR/<class>/<video>`, or `DIR/train/<class>/...` beside `DIR/val|validation|test/<class>/...`.
      class_names: the class list giving names and order; None: the folder names, sorted.
      val_fraction: the part of each class held out for validation in the `DIR/<class>` layout (0 holds none);
        None: 0.2. A tree with split folders takes none.
      seed: the seed of that split; None: 0.

    Returns:
      `Found` files by split (`train`, `validation`, `test`), sorted by path; files that are no videos, or lie
      outside any class folder, carry their problem and no label. And the class names in index order.

    Raises:
      FolderError: mixed layouts, no class folders, a class folder without videos, folders outside
        `class_names`, a fraction outside [0, 1), or a fraction or seed for a tree with split folders.
    """
    split_dirs = _split_folders(root)
    if split_dirs is not None and (val_fraction, seed) != (None, None):
        raise FolderError(f"{root} has its own splits ({', '.join(p.name for p in split_dirs.values())}/); "
                          "--val_fraction and --seed apply to a folder of class folders")
    val_fraction = 0.2 if val_fraction is None else val_fraction
    if not 0 <= val_fraction < 1:
        raise FolderError(f"--val_fraction {val_fraction} must be at least 0 and below 1")
    names = _classes(split_dirs or {"train": root}, class_names)
    index = {class_lists.canonical(n): i for i, n in enumerate(names)}
    if split_dirs is None:
        return _stratified(_scan(root, root, index), val_fraction, seed or 0), names
    return {split: sorted(f for found in _scan(d, root, index).values() for f in found)
            for split, d in split_dirs.items()}, names
