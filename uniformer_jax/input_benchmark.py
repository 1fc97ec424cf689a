"""Input throughput per CPU core: our TFRecord pipelines next to decoding the same clips from mp4 with decord.

    python -m uniformer_jax.input_benchmark --workdir /tmp/input_bench

makes Kinetics-like videos (10 s, 30 fps, 427x320 H.264), builds them into TFRecords (JPEG frames at short
side 320), then times on one pinned core: training clips (16x4 sampling, RandAugment, resized crop, flip,
erasing, 224^2), test clips (4 clips x 1 centre crop, short side 224) and decord decoding the same frames from
the mp4 files, as the original loader does (decoding only: no resize or augmentation, so it is a lower bound
of the original's cost). Needs `pip install 'uniformer-jax[bench]'` for decord.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import av
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "/tmp/uniformer_input_bench", "where the videos and TFRecords go (reused)")
flags.DEFINE_integer("videos", 12, "number of videos")
flags.DEFINE_integer("clips", 96, "clips timed per pipeline")
flags.DEFINE_integer("cores", 1, "cores the benchmark is pinned to; figures are divided by it")
flags.DEFINE_integer("num_frames", 16, "frames per clip")
flags.DEFINE_integer("rate", 4, "sampling rate")


def make_video(path: Path, seconds: float = 10, fps: int = 30, width: int = 427, height: int = 320, seed=0):
    """A panning, textured scene: enough detail and motion that H.264 works as on real footage."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (height // 8 + 8, width // 8 + 40, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(texture, 8, 0), 8, 1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast"}
        for i in range(int(seconds * fps)):
            x, y = i % 300, (i // 3) % 60
            image = texture[y:y + height, x:x + width].astype(np.int16)
            image = np.clip(image + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def prepare(workdir: Path, count: int) -> tuple[list[Path], str]:
    from uniformer_jax.dataset_builder import build

    videos = workdir / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = videos / f"v{k:03d}.mp4"
        if not path.exists():
            make_video(path, seed=k)
        paths.append(path)
    (workdir / "list.csv").write_text("".join(f"{p.name},{k % 2}\n" for k, p in enumerate(paths)))
    builder = build("bench", videos, {"train": workdir / "list.csv"}, workdir / "tfds", short_side=320)
    return paths, builder.data_dir


def time_iterator(batches, clips_per_batch: int, clips: int) -> float:
    """Clips per second over `clips` clips, after one warm-up batch."""
    next(batches)
    start, done = time.perf_counter(), 0
    while done < clips:
        next(batches)
        done += clips_per_batch
    return done / (time.perf_counter() - start)


def decord_clips(paths: list[Path], sampling, clips_per_video: int, rng) -> float:
    """Clips per second decoding the frames of the same sampling from the mp4 files with decord."""
    import decord

    from uniformer_jax import data

    def indices(length):
        if clips_per_video == 1:  # training: one random dense clip
            start = rng.uniform(0, max(length - sampling.num_frames * sampling.rate, 0))
            return data.dense_indices(length, sampling.num_frames, sampling.rate, start).numpy()
        starts = data.dense_test_starts(length, sampling.num_frames, sampling.rate, clips_per_video)
        return np.concatenate([data.dense_indices(length, sampling.num_frames, sampling.rate, s).numpy()
                               for s in starts.numpy()])

    plans = []
    for path in paths:
        reader = decord.VideoReader(str(path), num_threads=1)
        plans.append(indices(len(reader)))
    start = time.perf_counter()
    for path, plan in zip(paths, plans):
        reader = decord.VideoReader(str(path), num_threads=1)
        reader.get_batch(sorted(set(plan.tolist()))).asnumpy()
    return len(paths) * clips_per_video / (time.perf_counter() - start)


def main(argv):
    del argv
    os.sched_setaffinity(0, set(range(FLAGS.cores)))  # before TensorFlow starts its thread pools
    import tensorflow as tf

    from uniformer_jax import data

    workdir = Path(FLAGS.workdir)
    paths, source = prepare(workdir, FLAGS.videos)
    sampling = data.Sampling(FLAGS.num_frames, FLAGS.rate)
    train, _ = data.train_dataset(source, "train", batch_size=8, sampling=sampling, aug=data.TrainAugment())
    train_rate = time_iterator(train.as_numpy_iterator(), 8, FLAGS.clips)
    views = data.TestViews(clips=4, crops=1)
    test, _, _ = data.eval_dataset(source, "train", batch_size=1, sampling=sampling, views=views)
    test_rate = time_iterator(test.repeat().as_numpy_iterator(), 4, FLAGS.clips)
    rng = np.random.default_rng(0)
    repeat = max(1, FLAGS.clips // len(paths))
    mp4_train = np.mean([decord_clips(paths, sampling, 1, rng) for _ in range(repeat)])
    mp4_test = np.mean([decord_clips(paths, sampling, 4, rng) for _ in range(max(1, repeat // 4))])
    cores = FLAGS.cores
    print(f"machine: {platform.processor() or platform.machine()}, {cores} pinned core(s); "
          f"tensorflow {tf.__version__}, av {av.__version__}")
    print(f"{FLAGS.videos} videos 10 s 30 fps 427x320 H.264 -> JPEG q90 TFRecords; clips {FLAGS.num_frames}x"
          f"{FLAGS.rate}, 224^2, uint8")
    print(f"{'pipeline':<44}{'clips/s/core':>14}{'vs mp4':>9}")
    print(f"{'train (RandAugment, crop, flip, erasing)':<44}{train_rate / cores:>14.2f}{train_rate / mp4_train:>9.2f}")
    print(f"{'mp4 + decord, train clip frames (decode only)':<44}{mp4_train / cores:>14.2f}{1:>9.2f}")
    print(f"{'test (4 clips x 1 crop, short side 224)':<44}{test_rate / cores:>14.2f}{test_rate / mp4_test:>9.2f}")
    print(f"{'mp4 + decord, test clip frames (decode only)':<44}{mp4_test / cores:>14.2f}{1:>9.2f}")


if __name__ == "__main__":
    app.run(main)
