"""Checking a dataset's TFRecord files: every record read (TFRecord's CRCs checked as it reads) and counted against
the shard lengths `dataset_info.json` records, so that a damaged or truncated shard is named before a run meets it.
"""

from __future__ import annotations

import dataclasses
import re

import tensorflow as tf
import tensorflow_datasets as tfds

from uniformer_jax import storage
from uniformer_jax.data import sources


@dataclasses.dataclass(frozen=True)
class Damage:
    """What is wrong with one record file."""
    file: str
    problem: str  # e.g. "corrupted record at byte 282489"

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}"


def record_files(source: str, splits: list[str] | None = None) -> dict[str, int | None]:
    """The record files of a dataset and how many records each should hold.

    Args:
      source: a TFDS dataset directory (`dataset_info.json` inside) or a DMVR file pattern.
      splits: the TFDS splits to list; None: all. A DMVR pattern names the files of one split: it is ignored.

    Returns:
      File -> its shard length from `dataset_info.json`, or None for DMVR files (which record none).

    Raises:
      ValueError: neither a dataset directory nor a pattern that matches files, or a split it does not have.
    """
    if sources.is_dataset_dir(source):
        info = tfds.builder_from_directory(source).info
        missing = sorted(set(splits or ()) - set(info.splits))
        if missing:
            raise ValueError(f"{source} has no split {missing[0]!r}; it has {sorted(info.splits)}")
        files = {}
        for split in splits or sorted(info.splits):
            part = info.splits[split]
            files.update({str(path): length for path, length in zip(part.filepaths, part.shard_lengths,
                                                                    strict=True)})
        return files
    files = storage.glob(source)
    if not files:
        raise ValueError(f"{source}: neither a dataset directory (with dataset_info.json) nor a pattern matching "
                         "TFRecord files")
    return dict.fromkeys(files)


def check_file(path: str, expected: int | None = None) -> Damage | None:
    """Reads every record of one file.

    Args:
      path: a TFRecord file.
      expected: the records it should hold, if known.

    Returns:
      What is wrong, or None.
    """
    if not storage.path(path).is_file():
        return Damage(path, "missing")
    try:
        count = int(tf.data.TFRecordDataset(path).reduce(0, lambda n, _: n + 1))
    except tf.errors.DataLossError as e:
        # TensorFlow says "corrupted record at 282489" (a byte offset) for a CRC mismatch, and "truncated record
        # at ..." for a shard cut short.
        found = re.search(r"(corrupted|truncated) record at (\d+)", e.message)
        problem = (f"{found.group(1)} record at byte {found.group(2)}" if found else e.message.splitlines()[0])
        return Damage(path, problem)
    except tf.errors.OpError as e:
        return Damage(path, f"cannot be read ({e.message.splitlines()[0]})")
    if expected is not None and count != expected:
        return Damage(path, f"holds {count} records; dataset_info.json says {expected}")
    return None


def damage_report(source: str, splits: list[str], done: str) -> str:
    """What to say when a run meets a record it cannot read: the damaged files (each file of `splits` read again
    to find them) and what to do.

    Args:
      source: the run's data source (a TFDS directory or DMVR pattern).
      splits: the splits the run was reading.
      done: what the run kept or did not write, e.g. "Nothing was written".

    Returns:
      One line: the damaged files with their byte offsets, `done`, and the commands that rebuild and check.
    """
    damaged = check_files(record_files(source, splits))
    found = "; ".join(map(str, damaged)) if damaged else "a record could not be read"
    return (f"{source} is damaged: {found}. {done}; rebuild the split with `python -m uniformer_jax.dataset_builder`, "
            f"and check the rest with `python -m uniformer_jax.dataset_builder --verify {source}`")


def check_files(files: dict[str, int | None], progress=None) -> list[Damage]:
    """Every file of `record_files` checked (`check_file`).

    Args:
      files: file -> the records it should hold, if known.
      progress: called after each file, if given.

    Returns:
      The damaged files, in file order; empty when all are whole.
    """
    damaged = []
    for path, expected in files.items():
        damage = check_file(path, expected)
        if damage:
            damaged.append(damage)
        if progress:
            progress()
    return damaged
