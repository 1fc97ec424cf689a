"""Class-name lists as released checkpoints use them, and the head rows of one class order in another.

The packaged lists (`label_maps/`, sources and licences in its SOURCES.md) go by short names such as
`k400-sensex`; `python -m uniformer_jax.labels` lists them.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import numpy as np

# Short name -> (packaged file, what it is). Sources and licences: label_maps/SOURCES.md.
CLASS_LISTS = {
    "k400-sensex": ("k400_sensex.tsv", "Kinetics-400, Sense-X order (its released K400 heads)"),
    "k600-sensex": ("k600_sensex.txt", "Kinetics-600, Sense-X order (its released K600 heads)"),
    "sthv1-sensex": ("sthv1_sensex.txt", "Something-Something V1, Sense-X order"),
    "sthv2-sensex": ("sthv2_sensex.txt", "Something-Something V2, Sense-X order"),
    "k400-mmaction2": ("k400_mmaction2.txt", "Kinetics-400, alphabetical (MMAction2's heads)"),
    "k600-mmaction2": ("k600_mmaction2.txt", "Kinetics-600, alphabetical (MMAction2)"),
    "k700-mmaction2": ("k700_mmaction2.txt", "Kinetics-700, alphabetical (MMAction2)"),
    "k710-opengvlab": ("k710_opengvlab.tsv", "Kinetics-710, OpenGVLab's order (its K710 heads; MMAction2's 20221219 "
                                             "files)"),
    "k710-mmaction2": ("k710_mmaction2.txt", "Kinetics-710, K400 part alphabetical (MMAction2's 20230612 files)"),
    "mit-mmaction2": ("mit_mmaction2.txt", "Moments in Time v1, the dataset's order (MMAction2)"),
}

# Kinetics-710 names a class as Kinetics-700 does; these are the older Kinetics-400/600 names of 14 of them
# (found by comparing OpenGVLab's K710 list with Sense-X's K400 order and MMAction2's channel maps).
K710_NAMES = {
    "balloon blowing": "inflating balloons", "changing wheel": "changing wheel (not on bike)",
    "cooking sausages": "cooking sausages (not on barbeque)", "drinking": "sipping cup", "dying hair": "dyeing hair",
    "garbage collecting": "person collecting garbage", "hugging": "hugging (not baby)", "making bed": "making the bed",
    "opening bottle": "opening bottle (not wine)", "picking fruit": "picking apples",
    "skiing (not slalom or crosscountry)": "skiing mono", "sniffing": "smelling feet", "tying tie": "tying necktie",
    "throwing ball (not baseball or American football)": "throwing ball",
}


def class_list_path(name_or_path: str | Path) -> Path:
    """The file behind a short name from CLASS_LISTS, or the path itself.

    Args:
      name_or_path: a short name (`k400-sensex`) or a file.

    Returns:
      The packaged file's path, or `name_or_path` as a path.
    """
    if str(name_or_path) in CLASS_LISTS:
        return Path(str(resources.files(__package__) / "label_maps" / CLASS_LISTS[str(name_or_path)][0]))
    return Path(name_or_path)


def read_class_names(name_or_path: str | Path) -> list[str]:
    """Class names in index order from a short name (`k400-sensex`, see CLASS_LISTS) or a label file.

    Accepts one name per line (line i is class i), `name<TAB>index` (Sense-X K400) and `name index` (Sense-X K600),
    where the indices must be exactly 0..N-1 in any order.

    Args:
      name_or_path: a short name or a file.

    Returns:
      The names, class 0 first.

    Raises:
      ValueError: an unreadable or empty file, indices other than 0..N-1, or repeated names.
    """
    path = class_list_path(name_or_path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read label file {path}: {e}; give a class-list file or one of the short names "
                         f"{', '.join(CLASS_LISTS)}") from None
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


def canonical(name: str) -> str:
    """The matching key of a class name: case, underscores, punctuation and runs of spaces do not count.

    Sense-X writes `passing_American_football_(in_game)` and `massaging_persons_head` where MMAction2 writes
    `passing American football (in game)` and `massaging person's head`.

    Args:
      name: a class name.

    Returns:
      Its key.
    """
    return " ".join(re.sub(r"[^0-9a-z ]", "", name.replace("_", " ").lower()).split())


def head_rows(source: list[str], target: list[str]) -> np.ndarray:
    """Indices `p` with `source[p[i]]` naming the same class as `target[i]`; head rows become `rows[p]`.

    The lists hold the same classes (a reordering), or `source` is Kinetics-710 and `target` the Kinetics-400,
    600 or 700 classes within it, under their older names too (`K710_NAMES`): the rows MMAction2's K710 channel
    maps select.

    Args:
      source: the class names of the rows as they are.
      target: the class names in the order wanted.

    Returns:
      The row indices, an int array of `len(target)`.

    Raises:
      ValueError: names that only differ in case or punctuation, or classes that one list has and the other not
        (for a selection from more classes: classes of `target` that `source` lacks).
    """
    aliases = {canonical(old): canonical(new) for old, new in K710_NAMES.items()}
    selection = len(source) > len(target)

    def keys(names):
        keys = [canonical(n) for n in names]
        keys = [aliases.get(k, k) for k in keys] if selection else keys
        clashes = sorted({n for n, k in zip(names, keys, strict=True) if keys.count(k) > 1})
        if clashes:
            raise ValueError(f"class names that stand for one class cannot be matched: {clashes}")
        return keys

    index = {k: i for i, k in enumerate(keys(source))}
    wanted = keys(target)
    missing = [n for n, k in zip(target, wanted, strict=True) if k not in index]
    unused = [] if selection else sorted(set(index) - set(wanted))
    if missing or unused or len(source) < len(target):
        raise ValueError(
            f"class names do not match ({len(source)} source, {len(target)} target): "
            f"not in the source: {missing}; not in the target: {unused}")
    return np.array([index[k] for k in wanted])
