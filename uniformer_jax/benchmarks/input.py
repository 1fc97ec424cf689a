"""Input throughput per CPU core: our TFRecord pipelines next to decoding the same clips from mp4 with decord.

    python -m uniformer_jax.input_benchmark --workdir /tmp/input_bench

makes Kinetics-like videos (10 s, 30 fps, 426x320 H.264), builds them into TFRecords (JPEG frames at short
side 320), then times on pinned cores, for the TFRecord pipeline and for decord decoding the same frames from the
mp4 files (as the original loader does): the frames alone, training clips (16x4 sampling, RandAugment, resized
crop, flip, erasing, 224^2; the mp4 frames go through the same augmentation code) and test clips (4 clips x 1
centre crop, short side 224). Needs `pip install 'uniformer-jax[bench]'` for decord.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import av
import numpy as np
from absl import flags
from PIL import Image

from uniformer_jax import console

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "/tmp/uniformer_input_bench", "where the videos and TFRecords go (reused)")
flags.DEFINE_integer("videos", 12, "number of videos")
flags.DEFINE_integer("clips", 96, "clips timed per pipeline")
flags.DEFINE_integer("cores", 1, "cores the benchmark is pinned to; figures are divided by it")
flags.DEFINE_integer("num_frames", 16, "frames per clip")
flags.DEFINE_integer("rate", 4, "sampling rate")

SECONDS, FPS = 10, 30  # of each generated video


def _texture(rng, height: int, width: int, cell: int) -> np.ndarray:
    """Smooth random texture with detail at about `cell` pixels (bicubic upsampling of noise)."""
    small = rng.integers(0, 256, (height // cell + 2, width // cell + 2, 3), dtype=np.uint8)
    size = ((width // cell + 2) * cell, (height // cell + 2) * cell)
    return np.asarray(Image.fromarray(small).resize(size, Image.BICUBIC), np.float32)[:height, :width]


def make_video(path: Path, seconds: float = SECONDS, fps: int = FPS, width: int = 426, height: int = 320, seed=0):
    """A Kinetics-like mp4: a panning scene with a moving object and sensor noise.

    Frames compress to about 40 kB as JPEG q90 and the video to about 300 kB, near Kinetics at short side 320.

    Args:
      path: the file to write.
      seconds: its length.
      fps: its frame rate.
      width: its width.
      height: its height.
      seed: the scene's random seed.
    """
    rng = np.random.default_rng(seed)
    scene = 0.6 * _texture(rng, height + 64, width + 320, 32) + 0.4 * _texture(rng, height + 64, width + 320, 6)
    sprite = _texture(rng, 96, 96, 8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast"}
        for i in range(int(seconds * fps)):
            x, y = i % 300, (i // 3) % 60
            image = scene[y:y + height, x:x + width].copy()
            ox, oy = int(160 + 120 * np.sin(i / 20)), int(110 + 80 * np.cos(i / 27))
            image[oy:oy + 96, ox:ox + 96] = sprite
            image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def prepare(workdir: Path, count: int) -> tuple[list[Path], str]:
    """The benchmark's videos and their TFRecords, made once in `workdir` and reused.

    Args:
      workdir: where the videos and records go.
      count: how many videos.

    Returns:
      The video files and the dataset directory.
    """
    from uniformer_jax.data.builder import build

    videos = workdir / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = videos / f"v{k:03d}.mp4"
        if not path.exists():
            make_video(path.with_suffix(".tmp.mp4"), seed=k)
            path.with_suffix(".tmp.mp4").rename(path)
        paths.append(path)
    (workdir / "list.csv").write_text("".join(f"{p.name},{k % 2}\n" for k, p in enumerate(paths)))
    builder = build("bench", videos, {"train": workdir / "list.csv"}, workdir / "tfds", short_side=320)
    return paths, builder.data_dir


def time_iterator(batches, clips_per_batch: int, clips: int) -> float:
    """Clips per second over `clips` clips, after one warm-up batch.

    Args:
      batches: an iterator of batches.
      clips_per_batch: clips in each batch.
      clips: how many clips to time.

    Returns:
      The rate.
    """
    next(batches)
    start, done = time.perf_counter(), 0
    while done < clips:
        next(batches)
        done += clips_per_batch
    return done / (time.perf_counter() - start)


def jpeg_frames(source: str, sampling, views, count: int) -> float:
    """Clips per second sampling and decoding JPEG frames from the TFRecords, without any resizing.

    Args:
      source: the dataset directory.
      sampling: how frames are picked.
      views: the test views whose frames are decoded.
      count: clips to time.

    Returns:
      The rate.
    """
    import tensorflow as tf

    from uniformer_jax.data import pipelines, sources

    def frames(example):
        indices = pipelines.test_indices(tf.shape(example["frames"])[0], sampling, views)
        return pipelines.decode_frames(tf.gather(example["frames"], tf.unique(tf.reshape(indices, [-1]))[0]))

    examples = sources.open_split(source, "train").examples.repeat().map(frames)
    return time_iterator(examples.as_numpy_iterator(), views.clips, count)


def decord_clips(paths: list[Path], sampling, views, count: int, transform=None) -> float:
    """Clips per second decoding the same frames from the mp4 files with decord, then `transform` on them.

    Args:
      paths: the mp4 files.
      sampling: how frames are picked.
      views: the test views whose frames are decoded.
      count: clips to time.
      transform: `transform(frames, positions)` gets the distinct frames in order and each clip frame's position
        among them; None: decoding alone.

    Returns:
      The rate.
    """
    import decord

    from uniformer_jax.data import pipelines

    def batches():
        while True:
            for path in paths:
                reader = decord.VideoReader(str(path), num_threads=1)
                indices = pipelines.test_indices(len(reader), sampling, views).numpy().reshape(-1)
                unique = np.unique(indices)
                frames = reader.get_batch(unique.tolist()).asnumpy()
                yield frames if transform is None else transform(frames, np.searchsorted(unique, indices))

    return time_iterator(batches(), views.clips, count)


def main(argv):
    """`python -m uniformer_jax.input_benchmark`: prints the table of clips per second and core.

    Args:
      argv: the command line after absl's flags (unused).
    """
    console.quiet_logging()
    del argv
    os.sched_setaffinity(0, set(range(FLAGS.cores)))  # before TensorFlow starts its thread pools
    import tensorflow as tf

    from uniformer_jax.data import augment, pipelines

    workdir = Path(FLAGS.workdir)
    paths, source = prepare(workdir, FLAGS.videos)
    sampling, aug = pipelines.Sampling(FLAGS.num_frames, FLAGS.rate), pipelines.TrainAugment()
    views = pipelines.TestViews(4, 1)
    count = FLAGS.clips
    train = pipelines.train_dataset(source, "train", batch_size=8, sampling=sampling, aug=aug)
    test, _, _ = pipelines.eval_dataset(source, "train", batch_size=1, sampling=sampling, views=views)

    @tf.function
    def augment_clip(frames, positions):
        return augment.train_augment(tf.gather(frames, positions), aug, tf.constant([0, 0], tf.int64))

    test_clips = tf.function(lambda frames, positions: pipelines.views_from_frames(frames, positions, sampling, views))
    one_clip = pipelines.TestViews(clips=1)  # a training clip's frames: as many as one test clip's

    size = np.mean([p.stat().st_size for p in paths]) / 1e3
    cores = FLAGS.cores
    print(f"machine: {platform.processor() or platform.machine()}, {cores} pinned core(s); "
          f"tensorflow {tf.__version__}, av {av.__version__}")
    frame_kb = sum(f.stat().st_size for f in Path(source).glob("*.tfrecord*")) / 1e3 / (SECONDS * FPS * len(paths))
    print(f"{len(paths)} videos, {SECONDS} s {FPS} fps 426x320 H.264 ({size:.0f} kB each) -> JPEG q90 TFRecords "
          f"({frame_kb:.0f} kB a frame); "
          f"{sampling.num_frames}x{sampling.rate} clips, 224^2, uint8")
    print(f"{'clips/s per core':<50}{'TFRecords':>10}{'mp4+decord':>12}{'ratio':>8}", flush=True)
    rows = [  # (name, ours, mp4), each timed when its row is printed
        ("train clip frames, decode only", lambda: jpeg_frames(source, sampling, one_clip, count),
         lambda: decord_clips(paths, sampling, one_clip, count)),
        ("train clips (RandAugment, crop, flip, erasing)", lambda: time_iterator(train.as_numpy_iterator(), 8, count),
         lambda: decord_clips(paths, sampling, one_clip, count, lambda f, p: augment_clip(f, p).numpy())),
        ("test clip frames, decode only", lambda: jpeg_frames(source, sampling, views, count),
         lambda: decord_clips(paths, sampling, views, count)),
        ("test clips (4 x 1 centre crop, short side 224)",
         lambda: time_iterator(test.repeat().as_numpy_iterator(), 4, count),
         lambda: decord_clips(paths, sampling, views, count, lambda f, p: test_clips(f, p).numpy())),
    ]
    for name, ours, mp4 in rows:
        ours, mp4 = ours(), mp4()
        print(f"{name:<50}{ours / cores:>10.2f}{mp4 / cores:>12.2f}{ours / mp4:>8.2f}", flush=True)

