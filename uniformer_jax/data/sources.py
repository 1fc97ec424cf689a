"""Where examples come from: a TFDS directory written by `uniformer_jax.dataset_builder`, or DMVR/Scenic
`SequenceExample` TFRecords (a file pattern), split between processes, with the class names they carry.

Frames stay encoded here; `uniformer_jax.data` samples, decodes and augments them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from uniformer_jax import storage
from uniformer_jax.data import class_lists, records


class DataError(ValueError):
    """A data source or data option that cannot be used; the message says what to do."""


@dataclasses.dataclass
class Split:
    """One process's part of a split: examples {frames (encoded), label, labels, name, index} in a fixed order.

    `labels` holds every class of the video (one, or several in a multi-label dataset), `label` the first (-1 for
    none). `index` is an example's position in the whole split. `shuffled(seed)` gives the same examples with the
    order of the files drawn from `seed` (a stateless seed tensor), for training; sources whose files cannot be
    reordered without changing which process reads what give them in the stored order.
    """
    examples: tf.data.Dataset
    counts: list[int]  # examples of every process, in process order
    class_names: list[str] | None
    shuffled: Callable[[tf.Tensor], tf.data.Dataset]
    read: str  # what was read: the split of a TFDS directory, or a DMVR file pattern
    multi_label: bool = False  # whether videos of the split may have several labels
    label_text: dict[int, str] = dataclasses.field(default_factory=dict)  # DMVR `clip/label/text` by index
    # Read past damaged records (`records`): examples carry `whole`, `file` and `offset`, a damaged slot has
    # `whole` False; `damaged()` reads the part through and lists its damaged slots (file, offset). None: a damaged
    # record stops the reading (tf.errors.DataLossError).
    damaged: Callable[[], list[tuple[str, int]]] | None = None


def is_dataset_dir(source: str | storage.Path) -> bool:
    """Whether `source` is a TFDS dataset directory (as dataset_builder writes one), not a DMVR file pattern.

    Args:
      source: a data source (`data.source`), local or a URL.

    Returns:
      True when it holds `dataset_info.json`.
    """
    return (storage.path(source) / "dataset_info.json").is_file()


def open_split(source: str, split: str, *, process_index: int = 0, process_count: int = 1,
               skip_corrupt: bool = False) -> Split:
    """The part of `split` that this process reads: a TFDS directory, or a DMVR TFRecord file pattern.

    A DMVR pattern names the files of one split, so `split` only selects among the splits of a TFDS directory.

    Args:
      source: a TFDS dataset directory or a DMVR file pattern.
      split: a split of the TFDS directory.
      process_index: this process's index.
      process_count: the number of processes that share the split (an even, example-level part each).
      skip_corrupt: read past damaged records, each a damaged slot in its place (`Split.damaged`).

    Returns:
      The `Split` part: its files and read instructions, example counts per process, and class names.

    Raises:
      DataError: neither a dataset nor a pattern, a missing split, or DMVR records that are unreadable, of the
        pre-2022 layout or inconsistent in their class names.
    """
    if is_dataset_dir(source):
        return _open_tfds(source, split, process_index, process_count, skip_corrupt)
    files = storage.glob(source)
    if not files:
        raise DataError(f"{source}: neither a dataset directory (with dataset_info.json, as written by "
                        f"`python -m uniformer_jax.dataset_builder`) nor a pattern matching TFRecord files")
    return _open_dmvr(source, files, process_index, process_count, skip_corrupt)


def _with_slot(parse):
    """`parse(index, record)` for slots (`records.dataset`): a whole record parsed, a damaged slot given empty
    fields and label -1; both with `whole`, `file` and `offset`."""
    def parse_slot(index, slot, file):
        record, offset, whole = slot
        blank = {"frames": tf.zeros([0], tf.string), "label": tf.constant(-1), "labels": tf.zeros([0], tf.int32),
                 "name": tf.constant(""), "index": tf.cast(index, tf.int32)}
        example = tf.cond(whole, lambda: parse(index, record), lambda: blank)
        return {**example, "whole": whole, "file": file, "offset": offset}
    return parse_slot


def _open_tfds(directory: str, split: str, index: int, count: int, skip_corrupt: bool) -> Split:
    builder = tfds.builder_from_directory(directory)
    if split not in builder.info.splits:
        raise DataError(f"{directory} has no split {split!r}; it has {sorted(builder.info.splits)}")
    parts = tfds.even_splits(split, n=count)
    counts = [builder.info.splits[part].num_examples for part in parts]
    files = builder.info.splits[parts[index]].file_instructions
    # The split's examples are numbered in stored order, so each file piece knows where its examples start.
    starts = np.cumsum([sum(counts[:index])] + [f.take for f in files[:-1]])
    pieces = tf.data.Dataset.from_tensor_slices(
        ([f.filename for f in files], np.array([f.skip for f in files], np.int64),
         np.array([f.take for f in files], np.int64), starts.astype(np.int64)))
    features = builder.info.features
    multi = isinstance(features["label"], tfds.features.Sequence)
    names = (features["label"].feature if multi else features["label"]).names

    def read(name, skip, take, start):
        if skip_corrupt:
            slots = records.dataset(name, skip, take)
            return tf.data.Dataset.zip(slots.enumerate(start), tf.data.Dataset.from_tensors(name).repeat())
        return tf.data.TFRecordDataset(name).skip(skip).take(take).enumerate(start)

    def parse(i, record):
        ex = features.deserialize_example(record, decoders={"video": tfds.decode.SkipDecoding()})
        labels = tf.reshape(tf.cast(ex["label"], tf.int32), [-1])
        return {"frames": ex["video"], **_first(labels), "name": ex["name"], "index": tf.cast(i, tf.int32)}

    parse_element = (lambda pair, file: _with_slot(parse)(*pair, file)) if skip_corrupt else parse

    def examples(order):
        return order.interleave(read, cycle_length=min(len(files), 16), num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=True).map(parse_element, num_parallel_calls=tf.data.AUTOTUNE)

    def shuffled(seed):
        return examples(pieces.shuffle(len(files), seed=scalar_seed(seed)))

    def damaged():
        return records.damaged_slots([(f.filename, f.skip, f.take) for f in files])

    # One file at a time keeps the stored order, so an example's index is its position in the split.
    ordered = pieces.flat_map(read).map(parse_element, num_parallel_calls=tf.data.AUTOTUNE)
    return Split(ordered, counts, names, shuffled, split, multi_label=multi,
                 damaged=damaged if skip_corrupt else None)


def _first(labels) -> dict:
    """`labels` and its first class as `label`, -1 where there is none."""
    return {"label": tf.concat([labels, [-1]], 0)[0], "labels": labels}


def scalar_seed(seed):
    """An int64 seed for the tf.data ops that take one, drawn from a stateless seed pair.

    Args:
      seed: a stateless seed, shape (2,).

    Returns:
      A scalar int64 tensor.
    """
    return tf.random.stateless_uniform([], seed, minval=None, maxval=None, dtype=tf.int64)


_DMVR_OLD_LAYOUT = ("holds several JPEGs in one `image/encoded` Feature: this is DMVR's layout from before 2022-02 "
                    "(scenic#97). Re-create the records with DMVR's current generate_from_file.py, or build the "
                    "dataset with `python -m uniformer_jax.dataset_builder`")


def _parse_dmvr(index, record):
    context, sequence = tf.io.parse_single_sequence_example(
        record,
        context_features={"clip/label/index": tf.io.VarLenFeature(tf.int64),
                          "video/filename": tf.io.FixedLenFeature((), tf.string, default_value="")},
        sequence_features={"image/encoded": tf.io.RaggedFeature(tf.string)})
    frames = sequence["image/encoded"]
    # A file that mixes layouts still stops here; `_check_dmvr_layout` refuses the usual case before any compute.
    one_each = tf.debugging.assert_equal(frames.row_lengths(), tf.ones_like(frames.row_lengths()),
                                         message="a record " + _DMVR_OLD_LAYOUT)
    with tf.control_dependencies([one_each]):
        frames = tf.identity(frames.flat_values)
    labels = tf.cast(tf.sparse.to_dense(context["clip/label/index"]), tf.int32)
    return {"frames": frames, **_first(labels), "name": context["video/filename"], "index": tf.cast(index, tf.int32)}


def _check_dmvr_layout(pattern: str, record: bytes) -> None:
    try:
        example = tf.train.SequenceExample.FromString(record)
    except Exception as e:  # protobuf's DecodeError is not importable the same way across versions
        raise DataError(f"{pattern}: the first record is not a tf.train.SequenceExample ({e}); DMVR records "
                        "are written by DMVR's generate_from_file.py") from e
    frames = example.feature_lists.feature_list["image/encoded"].feature
    if not frames:
        raise DataError(f"{pattern}: the first record has no `image/encoded` frames; DMVR records hold one JPEG "
                        "per frame there")
    if any(len(f.bytes_list.value) != 1 for f in frames):
        raise DataError(f"{pattern}: the first record {_DMVR_OLD_LAYOUT}")


def _dmvr_records(files: list[str], skip_corrupt: bool) -> tf.data.Dataset:
    """(record, whole, file, offset) of every record of the files; all whole unless reading past damage."""
    if not skip_corrupt:
        return tf.data.TFRecordDataset(files).map(lambda r: (r, True, "", tf.constant(-1, tf.int64)))
    return tf.data.Dataset.from_tensor_slices(files).flat_map(lambda f: records.dataset(f, 0, -1).map(
        lambda record, offset, whole: (record, whole, f, offset)))


def _scan_dmvr(pattern: str, files: list[str], skip_corrupt: bool) -> tuple[int, dict[int, str], bool]:
    """The record count (damaged slots included), the class names the records carry (index -> `clip/label/text`,
    checked consistent) and whether a record has several labels."""
    def context(record, whole, *_):
        def parse():
            ctx, _ = tf.io.parse_single_sequence_example(
                record, context_features={"clip/label/index": tf.io.VarLenFeature(tf.int64),
                                          "clip/label/text": tf.io.VarLenFeature(tf.string)})
            return (tf.sparse.to_dense(ctx["clip/label/index"], -1)[:2],
                    tf.sparse.to_dense(ctx["clip/label/text"], b"")[:1])
        index, text = tf.cond(whole, parse, lambda: (tf.zeros([0], tf.int64), tf.zeros([0], tf.string)))
        return index, text, whole

    texts, total, multi = {}, 0, False
    contexts = _dmvr_records(files, skip_corrupt).map(context, num_parallel_calls=tf.data.AUTOTUNE)
    try:
        for index, text, whole in contexts.as_numpy_iterator():
            if not whole:  # a damaged slot: a place, and nothing to check
                total += 1
                continue
            if not index.size:
                raise DataError(f"{pattern}: record {total} has no `clip/label/index`; DMVR records for "
                                "classification carry it")
            multi |= index.size > 1
            if text.size and text[0]:
                name = text[0].decode("utf-8", "replace")
                if texts.setdefault(int(index[0]), name) != name:
                    raise DataError(f"{pattern}: class {int(index[0])} is {texts[int(index[0])]!r} in one record and "
                                    f"{name!r} in record {total}; the records' labels contradict each other")
            total += 1
    except tf.errors.OpError as e:
        raise DataError(f"{pattern}: record {total} cannot be read ({e.message.splitlines()[0]})") from e
    return total, texts, multi


def _open_dmvr(pattern: str, files: list[str], index: int, count: int, skip_corrupt: bool) -> Split:
    whole_records = _dmvr_records(files, skip_corrupt).filter(lambda record, whole, *_: whole)
    try:
        first = next(iter(whole_records.take(1).as_numpy_iterator()), None)
    except tf.errors.OpError as e:
        raise DataError(f"{pattern}: not TFRecord files ({e.message.splitlines()[0]})") from e
    if first is None:
        raise DataError(f"{pattern}: the files hold no records")
    _check_dmvr_layout(pattern, first[0])
    total, texts, multi = _scan_dmvr(pattern, files, skip_corrupt)
    # Records are split by position, so every process reads the files but parses only its own examples; the
    # file order stays fixed so that the examples of a process stay its own.
    counts = [len(range(i, total, count)) for i in range(count)]
    mine = _dmvr_records(files, skip_corrupt).enumerate().shard(count, index)
    if skip_corrupt:
        parse = _with_slot(_parse_dmvr)
        ds = mine.map(lambda i, slot: parse(i, (slot[0], slot[3], slot[1]), slot[2]))
    else:
        ds = mine.map(lambda i, slot: _parse_dmvr(i, slot[0]))

    def damaged():
        return [(file.decode(), int(offset)) for _, (_, whole, file, offset) in mine.as_numpy_iterator()
                if not whole]

    names = [texts[i] for i in range(len(texts))] if sorted(texts) == list(range(len(texts))) and texts else None
    return Split(ds, counts, names, lambda seed: ds, pattern, multi, texts, damaged if skip_corrupt else None)


def class_names(part: Split, given: list[str] | None, source: str) -> list[str] | None:
    """The split's class names: `given` (a class list) checked against the names the split carries, else those.

    Args:
      part: what `open_split` returned.
      given: a class list (`data.class_names`), or None.
      source: the dataset, for the error message.

    Returns:
      The class names, or None where neither the split nor the config names them.

    Raises:
      DataError: `given` names a class otherwise than the split does.
    """
    if given is None:
        return part.class_names
    for index, text in sorted((part.label_text or dict(enumerate(part.class_names or ()))).items()):
        if index >= len(given) or class_lists.canonical(given[index]) != class_lists.canonical(text):
            have = repr(given[index]) if index < len(given) else f"nothing (it has {len(given)} classes)"
            raise DataError(f"the class list names class {index} {have}, but {source} names it {text!r}: leave "
                            "data.class_names unset to take the data's own names, or give the list in its order")
    return given
