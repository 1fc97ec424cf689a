"""Class-name lists as released checkpoints use them, and permutations between class orders."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np


def read_class_names(path: str | Path) -> list[str]:
    """Class names in index order from a label file.

    Accepts one name per line (line i is class i), `name<TAB>index` (Sense-X K400) and `name index`
    (Sense-X K600), where the indices must be exactly 0..N-1 in any order.
    """
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read label file {path}: {e}") from None
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"label file {path} holds no class names")
    indexed = [re.fullmatch(r"(.+?)[\t ]+(\d+)", line) for line in lines]
    if not all(indexed):
        names = lines
    else:
        by_index = {int(m.group(2)): m.group(1).strip() for m in indexed}
        if sorted(by_index) != list(range(len(lines))):
            raise ValueError(f"label file {path}: the indices after the names are not exactly 0..{len(lines) - 1}")
        names = [by_index[i] for i in range(len(lines))]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"label file {path} repeats class names: {duplicates}")
    return names


def normalise(name: str) -> str:
    """The matching key of a class name: case, underscores, punctuation and runs of spaces do not count.

    Sense-X writes `passing_American_football_(in_game)` and `massaging_persons_head` where MMAction2 writes
    `passing American football (in game)` and `massaging person's head`.
    """
    return " ".join(re.sub(r"[^0-9a-z ]", "", name.replace("_", " ").lower()).split())


def permutation(source: list[str], target: list[str]) -> np.ndarray:
    """Indices `p` with `source[p[i]]` naming the same class as `target[i]`; rows reorder as `rows[p]`."""
    for names in (source, target):
        keys = [normalise(n) for n in names]
        clashes = sorted({n for n, k in zip(names, keys) if keys.count(k) > 1})
        if clashes:
            raise ValueError(f"class names that differ only in case or punctuation cannot be matched: {clashes}")
    index = {normalise(n): i for i, n in enumerate(source)}
    missing = [n for n in target if normalise(n) not in index]
    unused = sorted(set(index) - {normalise(n) for n in target})
    if missing or unused or len(source) != len(target):
        raise ValueError(
            f"class names do not match ({len(source)} source, {len(target)} target): "
            f"not in the source: {missing}; not in the target: {unused}")
    return np.array([index[normalise(n)] for n in target])
