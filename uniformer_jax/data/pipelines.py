"""tf.data input: uint8 clips sampled and augmented as the original UniFormer recipe, one part per process.

Examples come from `uniformer_jax.data.sources` (a TFDS directory or DMVR TFRecords). Frames are chosen on the
still-encoded JPEG strings and only those are decoded. Clips stay uint8; `models.layers.normalise` runs on the device,
inside the jitted step.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from uniformer_jax.data import augment, records
from uniformer_jax.data.sources import DataError, Split, open_split, scalar_seed

MODES = ("dense", "segment")


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How frames are picked from a video (Sense-X `slowfast/datasets/kinetics.py`, `sth.py`)."""
    num_frames: int = 16
    rate: int = 4  # dense sampling: source frames per sampled frame
    mode: str = "dense"  # "dense" (Kinetics) or "segment" (TSN-style, Something-Something)

    def __post_init__(self):
        if self.mode not in MODES or self.num_frames < 1 or self.rate < 1:
            raise DataError(f"sampling needs mode in {MODES}, num_frames >= 1 and rate >= 1; got {self}")


@dataclasses.dataclass(frozen=True)
class TrainAugment:
    """The original training recipe; each piece can be switched off."""
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True  # False for Something-Something
    randaugment: bool = True
    randaugment_policy: str = "rand-m7-n4-mstd0.5-inc1"  # timm's notation (augment.parse_policy)
    erasing: float = 0.25  # probability of one random-erasing box, the same on all frames
    repeats: int = 2  # clips per video per epoch (repeated augmentation)

    def __post_init__(self):
        try:
            augment.parse_policy(self.randaugment_policy)
        except ValueError as e:
            raise DataError(str(e)) from None


@dataclasses.dataclass(frozen=True)
class TestViews:
    """Test views: short side resized, then `crops` spatial crops of each of `clips` temporal clips."""
    clips: int = 4
    crops: int = 1  # 1 (centre) or 3 (left/centre/right, or top/centre/bottom)
    short_side: int = 224
    crop_size: int = 224

    def __post_init__(self):
        if self.crops not in (1, 3) or self.clips < 1 or not 0 < self.crop_size <= self.short_side:
            raise DataError(f"test views need crops 1 or 3, clips >= 1 and 0 < crop_size <= short_side; got {self}")


# --- temporal sampling ---------------------------------------------------------------------------------------

def _dense_indices(length, num_frames: int, rate: int, start):
    """`num_frames` frames spread over [start, start + num_frames * rate - 1], clamped to the video, truncated.

    SlowFast/UniFormer's decord path: a video shorter than the span repeats its last frame.
    """
    span = num_frames * rate
    positions = tf.linspace(tf.cast(start, tf.float64), tf.cast(start, tf.float64) + span - 1, num_frames)
    return tf.cast(tf.clip_by_value(positions, 0.0, tf.cast(length - 1, tf.float64)), tf.int32)


def _dense_train_start(length, num_frames: int, rate: int, seed):
    delta = tf.maximum(tf.cast(length - num_frames * rate, tf.float64), 0.0)
    return tf.random.stateless_uniform((), seed, dtype=tf.float64) * delta


def _dense_test_starts(length, num_frames: int, rate: int, clips: int):
    """Offset sampling: clip k of n starts at k * floor(delta / (n - 1)); one clip is centred."""
    delta = tf.maximum(length - num_frames * rate, 0)
    if clips == 1:
        return tf.reshape(delta // 2, (1,))
    return tf.range(clips) * (delta // (clips - 1))


def _segment_bounds(length, num_frames: int):
    size = tf.cast(length - 1, tf.float64) / num_frames
    steps = tf.range(num_frames + 1, dtype=tf.float64) * size
    bounds = tf.cast(tf.round(steps), tf.int32)  # round half to even, as numpy's round
    return bounds[:-1], bounds[1:], size


def _segment_train_indices(length, num_frames: int, seed):
    """TSN sampling: a random frame of each of `num_frames` equal segments (ends included)."""
    starts, ends, _ = _segment_bounds(length, num_frames)
    offsets = tf.random.stateless_uniform((num_frames,), seed, dtype=tf.float64)
    return starts + tf.cast(offsets * tf.cast(ends - starts + 1, tf.float64), tf.int32)


def _segment_test_indices(length, num_frames: int, clip: int, clips: int):
    starts, _, size = _segment_bounds(length, num_frames)
    return starts + tf.cast(size / (clips + 1) * (clip + 1), tf.int32)


def decode_frames(strings):
    """JPEG strings to frames, decoded exactly (`INTEGER_ACCURATE`, as PIL and decord decode).

    Args:
      strings: a 1-D string tensor of JPEG frames.

    Returns:
      The frames (T, H, W, 3), uint8.
    """
    return tf.map_fn(lambda s: tf.io.decode_jpeg(s, channels=3, dct_method="INTEGER_ACCURATE"), strings,
                     fn_output_signature=tf.uint8)


# --- spatial -------------------------------------------------------------------------------------------------

RESIZE_CHUNK = 32  # frames of a video file resized together: one TF call each, a bounded buffer at the source size


def resize_short_side(frames, size: int):
    """Bilinear resize so the shorter side is `size`, the other floor-scaled (SlowFast's short-side scale).

    Args:
      frames: uint8 frames (..., H, W, 3).
      size: the shorter side after resizing.

    Returns:
      The resized frames, uint8.
    """
    shape = tf.shape(frames)
    height, width = tf.cast(shape[-3], tf.float64), tf.cast(shape[-2], tf.float64)
    new = tf.cond(width < height,
                  lambda: tf.stack([tf.floor(height / width * size), tf.constant(size, tf.float64)]),
                  lambda: tf.stack([tf.constant(size, tf.float64), tf.floor(width / height * size)]))
    return augment.resize(frames, tf.cast(new, tf.int32))


def _spatial_crops(frames, size: int, crops: int):
    """SlowFast's uniform crops of (T, H, W, 3) frames: the centre, or 3 along the longer side."""
    frames = tf.convert_to_tensor(frames)  # numpy frames sliced by tensors would come back as int32
    shape = tf.shape(frames)
    height, width = shape[-3], shape[-2]
    centre_y, centre_x = (height - size + 1) // 2, (width - size + 1) // 2  # ceil
    if crops == 1:
        offsets = [(centre_y, centre_x)]
    else:
        tall = height > width
        offsets = [(tf.where(tall, 0, centre_y), tf.where(tall, centre_x, 0)), (centre_y, centre_x),
                   (tf.where(tall, height - size, centre_y), tf.where(tall, centre_x, width - size))]
    return tf.stack([frames[:, y:y + size, x:x + size] for y, x in offsets])


# --- pipelines -------------------------------------------------------------------------------------------------

def test_indices(length, sampling: Sampling, views: TestViews):
    """The frame indices of each temporal test clip.

    Args:
      length: the video's frame count (a scalar tensor).
      sampling: dense offset sampling, or segment (TSN) sampling.
      views: how many temporal clips.

    Returns:
      The indices, (clips, T) int32.
    """
    if sampling.mode == "dense":
        starts = _dense_test_starts(length, sampling.num_frames, sampling.rate, views.clips)
        return tf.map_fn(lambda s: _dense_indices(length, sampling.num_frames, sampling.rate, s), starts)
    return tf.stack([_segment_test_indices(length, sampling.num_frames, k, views.clips) for k in range(views.clips)])


def views_from_frames(decoded, positions, sampling: Sampling, views: TestViews):
    """The test views of decoded frames: resized to the short side, cropped, clip-major.

    Args:
      decoded: the distinct frames the views use, uint8 (N, H, W, 3).
      positions: each view frame's position in `decoded`, clip after clip, (clips * T,).
      sampling: the clips' frame count.
      views: clips, crops, short side and crop size.

    Returns:
      The views (clips * crops, T, S, S, 3), uint8.
    """
    return crop_views(resize_short_side(decoded, views.short_side), positions, sampling, views)


def crop_views(resized, positions, sampling: Sampling, views: TestViews):
    """`views_from_frames` for frames already resized to the short side.

    Args:
      resized: the distinct frames the views use, resized, uint8 (N, H, W, 3).
      positions: each view frame's position in `resized`, clip after clip, (clips * T,).
      sampling: the clips' frame count.
      views: clips, crops and crop size.

    Returns:
      The views (clips * crops, T, S, S, 3), uint8.
    """
    crops = tf.gather(_spatial_crops(resized, views.crop_size, views.crops), positions, axis=1)
    size = views.crop_size
    crops = tf.reshape(crops, (views.crops, views.clips, sampling.num_frames, size, size, 3))
    return tf.reshape(tf.transpose(crops, [1, 0, 2, 3, 4, 5]),
                      (views.clips * views.crops, sampling.num_frames, size, size, 3))


def test_views(example, sampling: Sampling, views: TestViews):
    """All test views of one video; overlapping clips decode their shared frames once.

    Args:
      example: a record with `frames`, the video's JPEG strings.
      sampling: how frames are picked.
      views: clips, crops, short side and crop size.

    Returns:
      The views (clips * crops, T, S, S, 3), uint8.
    """
    frames = example["frames"]
    indices = test_indices(tf.shape(frames)[0], sampling, views)
    unique, positions = tf.unique(tf.reshape(indices, [-1]))
    return views_from_frames(decode_frames(tf.gather(frames, unique)), positions, sampling, views)


def _train_clip(frames, seed, *, sampling: Sampling, aug: TrainAugment):
    """One augmented training clip (T, S, S, 3) uint8 from a video's encoded frames."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    length = tf.shape(frames)[0]
    if sampling.mode == "dense":
        start = _dense_train_start(length, sampling.num_frames, sampling.rate, seeds[0])
        indices = _dense_indices(length, sampling.num_frames, sampling.rate, start)
    else:
        indices = _segment_train_indices(length, sampling.num_frames, seeds[0])
    return augment.train_augment(decode_frames(tf.gather(frames, indices)), aug, seeds[1])


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.threading.private_threadpool_size = os.cpu_count() or 1
    options.threading.max_intra_op_parallelism = 1  # parallelism comes from the maps, not within an op
    options.autotune.enabled = True
    return options


def local_batch_size(global_batch: int, process_count: int, local_devices: int) -> int:
    """This process's share of a global batch.

    Args:
      global_batch: examples per step over all processes.
      process_count: the number of processes.
      local_devices: this process's devices, which split its share.

    Returns:
      `global_batch // process_count`.

    Raises:
      DataError: a batch that does not split evenly over the processes and their devices.
    """
    if global_batch % process_count or (global_batch // process_count) % local_devices:
        raise DataError(f"batch size {global_batch} cannot be split evenly over {process_count} process(es) with "
                        f"{local_devices} device(s) each; use a multiple of {process_count * local_devices}")
    return global_batch // process_count


def label_of(part: Split, source: str, num_classes: int | None):
    """How an example's label is given to the model: its class, or the multi-hot vector of all its classes.

    Args:
      part: the split the examples come from.
      source: the dataset, for the message.
      num_classes: the class count of multi-label targets; None: one class a video.

    Returns:
      `example -> label`: an int32 scalar, or a (num_classes,) float32 multi-hot vector.

    Raises:
      DataError: videos with several labels and `num_classes` None.
    """
    if num_classes is None:
        if part.multi_label:
            raise DataError(f"{source} gives videos several labels: set --config.data.multi_label=True to train "
                            "and test with one sigmoid a class")
        return lambda example: example["label"]
    return lambda example: tf.reduce_max(tf.one_hot(example["labels"], num_classes), axis=0)


def train_dataset(source: str, split: str, *, batch_size: int, sampling: Sampling, aug: TrainAugment,
                  seed: int = 0, process_index: int = 0, process_count: int = 1, shards: int | None = None,
                  start: int = 0, shuffle_buffer: int = 128, num_classes: int | None = None,
                  on_skip: Callable[[str, int, int], None] | None = None) -> tf.data.Dataset:
    """An endless stream of this process's training batches, epoch after epoch, as the original samples them.

    The split is read as `shards` parts, each an endless stream of its own; a process reads its share of them
    and its batch takes the same number of clips from each. Each epoch's file order, shuffle and augmentation
    come from (`seed`, shard, epoch) alone.

    Args:
      source: a TFDS dataset directory (what `dataset_builder` writes) or a DMVR TFRecord file pattern.
      split: the split's name (`train`); ignored for a DMVR pattern, which is one split.
      batch_size: clips per batch of this process (`local_batch_size` of the global batch).
      sampling: frames, rate and mode (`dense` with a random start, `segment` for TSN sampling).
      aug: the training augmentation; its `repeats` clips of a video come one after another.
      seed: the seed of shuffling and augmentation.
      process_index: this process's index (`jax.process_index()`).
      process_count: the number of processes reading the split.
      shards: streams the split is read as, a multiple of `process_count`; None: one per process. Fixed, the
        global batches (all processes' batches in process order) do not depend on the number of processes.
      start: clips this process has already used: the stream resumes exactly there, decoding none of them.
      shuffle_buffer: examples each stream shuffles among.
      num_classes: multi-label data: the class count of the multi-hot labels; None: one label a video.
      on_skip: read past damaged records (`data.records`), calling `on_skip(file, byte offset, step)` for each
        one skipped, `step` the 1-based batch it falls before; None: a damaged record stops the stream with
        `tf.errors.DataLossError`.

    Returns:
      A `tf.data.Dataset` of {video (B, T, S, S, 3) uint8, label (B,) int32, or (B, num_classes) multi-hot}.

    Raises:
      DataError: shards that do not divide over the processes or the batch, or a split that cannot be read.
    """
    shards = shards or process_count
    if shards % process_count or batch_size % (shards // process_count):
        raise DataError(f"{shards} input shards cannot be shared by {process_count} process(es) with "
                        f"{batch_size} clips each: use a multiple of the process count that divides the batch")
    mine = shards // process_count
    # Traced once for every stream and clip: tracing the augmentation takes seconds.
    clip = tf.function(functools.partial(_train_clip, sampling=sampling, aug=aug),
                       input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([2], tf.int64)])
    streams = [_shard_stream(source, split, shard, shards, clip, sampling=sampling, aug=aug, seed=seed,
                             start=start // mine, shuffle_buffer=shuffle_buffer, num_classes=num_classes,
                             on_skip=on_skip and (lambda file, offset, used: on_skip(file, offset,
                                                                                    used // (batch_size // mine) + 1)))
               .batch(batch_size // mine)
               for shard in range(process_index * mine, (process_index + 1) * mine)]
    ds = streams[0] if mine == 1 else tf.data.Dataset.zip(tuple(streams)).map(
        lambda *parts: {k: tf.concat([p[k] for p in parts], 0) for k in parts[0]})
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def _shard_stream(source: str, split: str, shard: int, shards: int, clip: Callable, *, sampling: Sampling,
                  aug: TrainAugment, seed: int, start: int, shuffle_buffer: int, num_classes: int | None,
                  on_skip: Callable[[str, int, int], None] | None) -> tf.data.Dataset:
    """Clips of one shard of the split, epoch after epoch, from the `start`-th on.

    Epoch e of shard s has its own file order, shuffle and augmentation, drawn from (seed, s, e) alone, so only
    the part of the current epoch before `start` is read again, and none of it is decoded. The shuffle buffer
    holds whole encoded videos (about 10 MB each for 10 s at 320p). Read past damage, damaged slots keep their
    places in that order and are skipped after it, each reported as `on_skip(file, offset, clips before it)`;
    a resumed stream first reads its part through to count them, as an epoch holds that many fewer clips.
    """
    part = open_split(source, split, process_index=shard, process_count=shards, skip_corrupt=on_skip is not None)
    label = label_of(part, source, num_classes)
    videos = part.counts[shard] - (len(part.damaged()) if on_skip and start else 0)
    per_epoch = videos * aug.repeats
    if per_epoch == 0:
        raise DataError(f"{source} split {split!r} has no examples for input shard {shard} of {shards}")
    first_epoch, within = divmod(start, per_epoch)
    done_videos, done_clips = divmod(within, aug.repeats)
    shard_seed = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), shard)

    def epoch(e):
        epoch_seed = tf.random.experimental.stateless_fold_in(shard_seed, e)
        skip = tf.where(e == first_epoch, tf.constant(done_videos, tf.int64), 0)
        ordered = part.shuffled(epoch_seed).shuffle(shuffle_buffer, seed=scalar_seed(epoch_seed)).enumerate()
        kept = ordered.skip(skip) if on_skip is None else records.past(ordered, skip)
        return kept.map(lambda position, example: (e, position, example))

    def clips(e, position, example):
        epoch_seed = tf.random.experimental.stateless_fold_in(shard_seed, e)
        seeds = tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(epoch_seed, position), aug.repeats)
        video = tf.stack([clip(example["frames"], seeds[k]) for k in range(aug.repeats)])
        return {"video": video, "label": tf.stack([label(example)] * aug.repeats)}

    examples = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch)
    if on_skip is not None:
        examples = records.report_skips(examples, start - done_clips, aug.repeats, on_skip)
    return examples.map(clips, num_parallel_calls=tf.data.AUTOTUNE).unbatch().skip(done_clips)


def eval_dataset(source: str, split: str, *, batch_size: int, sampling: Sampling, views: TestViews,
                 process_index: int = 0, process_count: int = 1, num_classes: int | None = None
                 ) -> tuple[tf.data.Dataset, Split, int]:
    """A finite stream of this process's batches of whole videos, the same number of steps on every process.

    The last batches are padded with masked examples (`mask` False, label and index -1, multi-hot labels 0), so
    every video of the split is counted once whatever the number of processes and devices.

    Args:
      source: a TFDS dataset directory or a DMVR TFRecord file pattern.
      split: the split's name (`validation`, `test`); ignored for a DMVR pattern.
      batch_size: videos per batch of this process; each holds `views.clips x views.crops` views.
      sampling: frames, rate and mode of each clip (offset sampling: first clip at the start, last at the end).
      views: clips, crops, short side and crop size of the test views.
      process_index: this process's index (`jax.process_index()`).
      process_count: the number of processes reading the split.
      num_classes: multi-label data: the class count of the multi-hot labels; None: one label a video.

    Returns:
      The `tf.data.Dataset` of {video (B, V, T, S, S, 3) uint8, label, index, mask, name}, this process's part
      of the split (`Split`: files and example counts), and the number of steps every process runs.

    Raises:
      DataError: a split that cannot be read.
    """
    part = open_split(source, split, process_index=process_index, process_count=process_count)
    steps = math.ceil(max(part.counts) / batch_size)
    label = label_of(part, source, num_classes)

    def views_of(example):
        return {"video": test_views(example, sampling, views), "label": label(example),
                "index": example["index"], "mask": tf.constant(True), "name": example["name"]}

    real = part.examples.map(views_of, num_parallel_calls=tf.data.AUTOTUNE)
    size = views.crop_size
    blank = {"video": tf.zeros((views.clips * views.crops, sampling.num_frames, size, size, 3), tf.uint8),
             "label": tf.constant(-1) if num_classes is None else tf.zeros([num_classes]),
             "index": tf.constant(-1), "mask": tf.constant(False), "name": tf.constant("")}
    ds = (real.concatenate(tf.data.Dataset.from_tensors(blank).repeat()).take(steps * batch_size)
          .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    return ds.with_options(_options()), part, steps

