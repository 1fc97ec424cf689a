"""Training past damaged TFRecords (`data.skip_corrupt`): files read record by record with both CRCs checked, a
damaged record giving a damaged *slot* in its place instead of ending the file.

A slot keeps the positions of the records around it, and with them their augmentation seeds, so a resumed run
skips exactly what the first run skipped and sees the same clips. A TFRecord is its length (uint64, little-endian),
the masked CRC32C of the length, the data and the masked CRC32C of the data. A record whose data fails its CRC is
stepped over by its length; one whose length fails is one slot up to the next offset where a length and its data
both check out; a file cut short ends in damaged slots up to the records it should hold. TensorFlow's own reader
stops at the first of these, and `tf.data`'s `ignore_errors` drops the rest of the file with it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import google_crc32c
import tensorflow as tf

_HEADER, _FOOTER = 12, 4  # length and its CRC; the data's CRC
_WINDOW = 1 << 20  # bytes read at a time while looking for the next whole record


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF  # TFRecord's masking


class _Reader:
    """Reads at offsets of one file, local or a URL."""

    def __init__(self, path: str):
        self.file = tf.io.gfile.GFile(path, "rb")
        self.size = self.file.size()

    def at(self, offset: int, length: int) -> bytes:
        self.file.seek(offset)
        return self.file.read(length)

    def record_at(self, offset: int) -> tuple[bytes | None, int, int]:
        """The data of the record at `offset` (None: not whole), where the next one would start (-1: the length
        is damaged), and where the damage is as TensorFlow's reader reports it (the data's offset for a data CRC
        that fails, else the record's)."""
        header = self.at(offset, _HEADER)
        if len(header) < _HEADER:
            return None, self.size, offset
        length, length_crc = struct.unpack("<QI", header)
        if _masked_crc(header[:8]) != length_crc:
            return None, -1, offset
        end = offset + _HEADER + length + _FOOTER
        if end > self.size:
            return None, self.size, offset
        body = self.at(offset + _HEADER, length + _FOOTER)
        whole = _masked_crc(body[:length]) == struct.unpack("<I", body[length:])[0]
        return (body[:length], end, offset) if whole else (None, end, offset + _HEADER)

    def next_record(self, offset: int) -> int:
        """The first offset after `offset` where a whole record starts, or the file's size."""
        for window in range(offset + 1, self.size, _WINDOW):
            chunk = self.at(window, _WINDOW + _HEADER)
            for i in range(min(_WINDOW, len(chunk) - _HEADER + 1)):
                length, length_crc = struct.unpack_from("<QI", chunk, i)
                if _masked_crc(chunk[i:i + 8]) == length_crc and self.record_at(window + i)[0] is not None:
                    return window + i
        return self.size


def slots(path: str, count: int | None = None) -> Iterator[tuple[bytes, int, bool]]:
    """The records of a TFRecord file as slots: (data, offset, True) for a whole record, (b"", offset, False) for
    a damaged one, at the offset TensorFlow's reader names in its error (that of the part that fails).

    Args:
      path: the file, local or a URL.
      count: the records the file should hold (`dataset_info.json`'s shard length); a shorter file is given
        damaged slots up to it, at the file's size. None: as many as it has.

    Yields:
      One slot per record, in file order.
    """
    reader = _Reader(path)
    offset, given = 0, 0
    while offset < reader.size and (count is None or given < count):
        data, end, where = reader.record_at(offset)
        yield (b"", where, False) if data is None else (data, offset, True)
        offset = reader.next_record(offset) if end < 0 else end
        given += 1
    for _ in range(given, count or 0):
        yield b"", reader.size, False


def dataset(path: tf.Tensor, skip: tf.Tensor, take: tf.Tensor) -> tf.data.Dataset:
    """The slots of a file piece as a `tf.data.Dataset`, in place of `TFRecordDataset(path).skip(skip).take(take)`.

    Args:
      path: the file (a string tensor).
      skip: slots before the piece.
      take: slots in the piece; -1: to the end of the file.

    Returns:
      A dataset of (record, offset int64, whole bool).
    """
    @tf.autograph.experimental.do_not_convert  # a generator: nothing for autograph to convert
    def generate(path, skip, take):
        yield from _piece(path.decode(), int(skip), int(take))

    signature = (tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.bool))
    return tf.data.Dataset.from_generator(generate, args=(path, skip, take), output_signature=signature)


def damaged_slots(pieces: list[tuple[str, int, int]]) -> list[tuple[str, int]]:
    """The damaged slots of file pieces, read through.

    Args:
      pieces: (file, skip, take) of each piece; take -1: to the end of the file.

    Returns:
      (file, offset) of each damaged slot, in order.
    """
    return [(path, offset) for path, skip, take in pieces for _, offset, whole in _piece(path, skip, take)
            if not whole]


def _piece(path: str, skip: int, take: int) -> Iterator[tuple[bytes, int, bool]]:
    """The slots of a file piece: `take` after the first `skip` (-1: to the end of the file)."""
    for i, slot in enumerate(slots(path, None if take < 0 else skip + take)):
        if i >= skip:
            yield slot


def past(examples: tf.data.Dataset, done: tf.Tensor) -> tf.data.Dataset:
    """The (position, example) pairs of an epoch after its first `done` whole examples, damaged slots among them
    (`whole` False), so a resumed epoch starts at the same example as the run it resumes.

    Args:
      examples: enumerated examples, each with a `whole` flag.
      done: whole examples of the epoch already used.

    Returns:
      The pairs from the `done`-th whole example on, and the damaged slots between them.
    """
    def count(seen, element):
        position, example = element
        return seen + tf.cast(example["whole"], tf.int64), (seen, position, example)

    return (examples.scan(tf.constant(0, tf.int64), count)
            .filter(lambda seen, position, example: seen >= done)
            .map(lambda seen, position, example: (position, example)))


def report_skips(examples: tf.data.Dataset, start: int, clips_per_example: int,
                 on_skip: Callable[[str, int, int], None]) -> tf.data.Dataset:
    """The elements of a stream whose example is whole; each damaged slot reported with the clips before it.

    Args:
      examples: endless tuples whose last item is the example, with `whole`, `file` and `offset`.
      start: clips of the stream used before it.
      clips_per_example: clips a whole example gives.
      on_skip: called with (file, byte offset, clips of the stream before it) for each damaged slot, from a
        tf.data thread.

    Returns:
      The elements with whole examples.
    """
    def count(used, element):
        return used + clips_per_example * tf.cast(element[-1]["whole"], tf.int64), (used, element)

    def report(file, offset, used):
        on_skip(file.numpy().decode(), int(offset), int(used))
        return False

    def keep(used, element):
        example = element[-1]
        return tf.cond(example["whole"], lambda: True, lambda: tf.reshape(
            tf.py_function(report, [example["file"], example["offset"], used], tf.bool), []))

    return examples.scan(tf.constant(start, tf.int64), count).filter(keep).map(lambda used, element: element)
