"""The dataset builder and the tf.data reader, on small mp4 files whose pixels name their frame index.

Expected frame indices come from the sampling formulas of Sense-X's `slowfast/datasets/kinetics.py` and `sth.py`
written out here in plain Python,
and stored frames are compared with what PyAV itself decodes from the files.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import filelock
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.videos import ffmpeg_fps_indices, frame, frame_index, write_video
from uniformer_jax.data import pipelines, records, sources
from uniformer_jax.data import video as video_lib
from uniformer_jax.data.builder import BuildError, build
from uniformer_jax.models.layers import normalise

VIDEOS = {  # relative path: (frames, fps, width, height, codec)
    "a/v0.mp4": (40, 25, 160, 120, "libx264"),
    "a/v1.mp4": (100, 30, 120, 160, "libx264"),
    "b/v2.mp4": (12, 10, 96, 64, "mpeg4"),
    "b/v3.mp4": (70, 24, 128, 96, "libx264"),
}
TRAIN = ["a/v0.mp4,0", "a/v1.mp4,1", "b/v2.mp4,2", "b/trunc.mp4,1", "b/text.mp4,0", "b/missing.mp4,2", "b/v3.mp4,1"]
VALIDATION = ["a/v0.mp4 0", "b/v2.mp4 2", "a/v1.mp4 1", "b/v3.mp4 1", "b/text.mp4 0"]
CLASSES = ["zebra", "apple", "moon"]
SHORT_SIDE = 64


def make_videos(root: Path) -> None:
    for name, (n, fps, w, h, codec) in VIDEOS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / name, n, fps, w, h, codec)
    whole = (root / "a/v1.mp4").read_bytes()
    (root / "b/trunc.mp4").write_bytes(whole[: len(whole) // 2])
    (root / "b/text.mp4").write_text("this is not a video\n")


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    make_videos(root / "videos")
    (root / "train.csv").write_text("\n".join(TRAIN) + "\n")
    (root / "val.txt").write_text("\n".join(VALIDATION) + "\n")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    builder = build("tiny", root / "videos", {"train": root / "train.csv", "validation": root / "val.txt"},
                    root / "tfds", classes=root / "classes.txt", short_side=SHORT_SIDE, workers=2)
    return Path(builder.data_dir)


def lengths(split_lines, sep):
    """Frame counts of the listed videos that decode, by name, from the test's own table."""
    names = [line.rsplit(sep, 1)[0] for line in split_lines]
    return {n: VIDEOS[n][0] for n in names if n in VIDEOS}


def read_all(source, split):
    ds = tfds.builder_from_directory(str(source)).as_dataset(split=split)
    return {ex["name"].decode(): ex for ex in ds.as_numpy_iterator()}


def test_build_writes_every_readable_video_and_reports_the_rest(dataset):
    info = tfds.builder_from_directory(str(dataset)).info
    assert info.features["label"].names == CLASSES
    for split, lines, sep in (("train", TRAIN, ","), ("validation", VALIDATION, " ")):
        skipped = dict(line.split("\t") for line in (dataset / f"skipped-{split}.tsv").read_text().splitlines())
        assert info.splits[split].num_examples + len(skipped) == len(lines)
        assert info.splits[split].num_examples == len(lengths(lines, sep))
    skipped = dict(line.split("\t") for line in (dataset / "skipped-train.tsv").read_text().splitlines())
    assert set(skipped) == {"b/trunc.mp4", "b/text.mp4", "b/missing.mp4"}
    assert "no such file" in skipped["b/missing.mp4"]
    assert "cannot decode" in skipped["b/text.mp4"]


def test_stored_frames_are_all_frames_at_the_short_side(dataset):
    examples = read_all(dataset, "train")
    assert set(examples) == set(lengths(TRAIN, ","))
    labels = dict(line.rsplit(",", 1) for line in TRAIN)
    for name, ex in examples.items():
        n, fps, w, h, _ = VIDEOS[name]
        assert ex["num_frames"] == n == len(ex["video"])
        assert ex["fps"] == pytest.approx(fps)
        assert ex["label"] == int(labels[name])
        assert min(ex["video"].shape[1:3]) == SHORT_SIDE
        assert (ex["video"].shape[2] > ex["video"].shape[1]) == (w > h)
        assert [frame_index(f) for f in ex["video"]] == list(range(n))


def test_a_second_build_reuses_the_dataset(dataset):
    files = sorted(dataset.glob("*.tfrecord*"))
    stamps = [f.stat().st_mtime_ns for f in files]
    root = dataset.parents[3]
    build("tiny", root / "videos", {"train": root / "train.csv", "validation": root / "val.txt"}, root / "tfds",
          classes=root / "classes.txt", short_side=SHORT_SIDE, workers=2)
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_target_fps_keeps_the_frames_of_ffmpegs_fps_filter(tmp_path):
    make_videos(tmp_path / "videos")
    (tmp_path / "list.txt").write_text("a/v0.mp4 0\na/v1.mp4 0\nb/v2.mp4 0\nb/v3.mp4 0\n")
    builder = build("fps", tmp_path / "videos", {"train": tmp_path / "list.txt"}, tmp_path / "tfds", fps=8,
                    short_side=0, workers=1)
    for name, ex in read_all(builder.data_dir, "train").items():
        _, _, w, h, _ = VIDEOS[name]
        assert [frame_index(f) for f in ex["video"]] == ffmpeg_fps_indices(tmp_path / "videos" / name, 8)
        assert ex["fps"] == 8 and ex["video"].shape[1:3] == (h, w)


def ffmpeg_frames(path: Path, width: int, height: int) -> np.ndarray:
    """The frames the ffmpeg command line decodes (its autorotation on), as (T, H, W, 3) uint8."""
    import imageio_ffmpeg

    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


ONE = 65536  # 1.0 in the display matrix's 16.16 fixed point; its last entry is 2.30
TURNS = {  # display matrix -> (degrees as ffmpeg reads them, whether the upright frame is portrait)
    "rotate 90": ([0, -ONE, 0, ONE, 0, 0, 0, 0, 1 << 30], 90, True),
    "rotate 180": ([-ONE, 0, 0, 0, -ONE, 0, 0, 0, 1 << 30], 180, False),
    "rotate 270": ([0, ONE, 0, -ONE, 0, 0, 0, 0, 1 << 30], 270, True),
    "mirror": ([-ONE, 0, 0, 0, ONE, 0, 0, 0, 1 << 30], 180, False),  # ffmpeg: theta 180, so hflip alone
    "rotate 90, flipped": ([0, ONE, 0, ONE, 0, 0, 0, 0, 1 << 30], 270, True),
}


def test_phone_videos_come_out_upright_as_ffmpeg_shows_them(tmp_path):
    (tmp_path / "videos").mkdir()
    names = {}
    for k, (case, (matrix, _, _)) in enumerate(TURNS.items()):
        names[case] = f"turned{k}.mp4"
        write_video(tmp_path / "videos" / names[case], 6, 25, 96, 64, display_matrix=matrix)
    (tmp_path / "list.txt").write_text("".join(f"{n} 0\n" for n in names.values()))
    built = read_all(build("turned", tmp_path / "videos", {"train": tmp_path / "list.txt"}, tmp_path / "tfds",
                           short_side=0, workers=1, jpeg_quality=95).data_dir, "train")
    for case, (_, degrees, portrait) in TURNS.items():
        width, height = (64, 96) if portrait else (96, 64)
        reference = ffmpeg_frames(tmp_path / "videos" / names[case], width, height).astype(int)
        decoded = video_lib.read_video(tmp_path / "videos" / names[case])
        assert decoded.rotation == degrees, case
        assert np.abs(np.stack(decoded.frames) - reference).mean() < 1.0, case  # both swscale; coded as is: ~60
        stored = built[names[case]]
        assert stored["video"].shape[1:3] == (height, width) and stored["rotation"] == degrees, case
        assert np.abs(stored["video"].astype(int) - reference).mean() < 3.0, case  # JPEG on top


def test_truncated_videos_are_skipped_with_how_much_decodes(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "faststart.mp4", 60, 30, 96, 64, options={"movflags": "+faststart"})
    write_video(folder / "whole.webm", 20, 30, 96, 64, codec="libvpx-vp9")
    cuts = {"faststart.mp4": (0.6, 0.9), "whole.webm": (0.6,)}
    lines = ["faststart.mp4 0", "whole.webm 0"]
    for name, fractions in cuts.items():
        data = (folder / name).read_bytes()
        for fraction in fractions:
            cut = f"cut{int(fraction * 100)}_{name}"
            (folder / cut).write_bytes(data[:int(len(data) * fraction)])
            lines.append(f"{cut} 0")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    builder = build("cut", folder, {"train": tmp_path / "list.txt"}, tmp_path / "tfds", short_side=0, workers=2)
    assert sorted(read_all(builder.data_dir, "train")) == ["faststart.mp4", "whole.webm"]
    skipped = dict(line.split("\t") for line in (Path(builder.data_dir) / "skipped-train.tsv").read_text().splitlines())
    assert sorted(skipped) == ["cut60_faststart.mp4", "cut60_whole.webm", "cut90_faststart.mp4"]
    assert re.search(r"truncated: \d+ of 60 frames decode", skipped["cut60_faststart.mp4"])
    assert re.search(r"truncated: [\d.]+ of 0.67 seconds decode", skipped["cut60_whole.webm"])
    with pytest.raises(video_lib.VideoError, match="truncated"):
        list(video_lib.iter_frames(folder / "cut90_faststart.mp4"))  # predict reads through the same function


def test_a_new_build_removes_what_a_killed_one_left_but_not_a_running_ones(tmp_path):
    make_videos(tmp_path / "videos")
    (tmp_path / "list.txt").write_text("a/v0.mp4 0\n")
    folder = tmp_path / "tfds" / "video_classification" / "left"
    (folder / "incomplete.ABC123_1.0.0").mkdir(parents=True)  # as a build killed with kill -9 leaves it
    with filelock.FileLock(str(folder / ".build.lock")):  # a build of the same dataset still running
        with pytest.raises(BuildError, match="another build of left is writing"):
            build("left", tmp_path / "videos", {"train": tmp_path / "list.txt"}, tmp_path / "tfds", workers=1)
        assert (folder / "incomplete.ABC123_1.0.0").is_dir()
    build("left", tmp_path / "videos", {"train": tmp_path / "list.txt"}, tmp_path / "tfds", workers=1)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["1.0.0"]


def test_official_kinetics_csv_names_classes_in_sorted_order(tmp_path):
    rows = [("riding a bike", "abcdefghijk", 10, 20), ("air drumming", "ABCDEFGHIJK", 0, 10),
            ("riding a bike", "zzzzzzzzzzz", 5, 15)]
    for label, yid, start, end in rows:
        (tmp_path / "videos" / label).mkdir(parents=True, exist_ok=True)
        write_video(tmp_path / "videos" / label / f"{yid}_{start:06d}_{end:06d}.mp4", 20, 25, 64, 48)
    lines = ["label,youtube_id,time_start,time_end,split"] + [f"{c},{y},{s},{e},train" for c, y, s, e in rows]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    builder = build("k", tmp_path / "videos", {"train": tmp_path / "train.csv"}, tmp_path / "tfds", workers=1)
    assert builder.info.features["label"].names == ["air drumming", "riding a bike"]
    examples = read_all(builder.data_dir, "train")
    assert {name: int(ex["label"]) for name, ex in examples.items()} == {
        "riding a bike/abcdefghijk_000010_000020.mp4": 1, "air drumming/ABCDEFGHIJK_000000_000010.mp4": 0,
        "riding a bike/zzzzzzzzzzz_000005_000015.mp4": 1}
    (tmp_path / "classes.txt").write_text("air drumming\nabseiling\n")
    with pytest.raises(BuildError, match=r"train.csv:2: label 'riding a bike' is not one of the 2 classes"):
        build("k2", tmp_path / "videos", {"train": tmp_path / "train.csv"}, tmp_path / "tfds",
              classes=tmp_path / "classes.txt", workers=1)


@pytest.mark.parametrize("line, message", [("a/v0.mp4;3", "expected `path,label`"),
                                           ("a/v0.mp4 7", "outside the classes")])
def test_bad_list_lines_are_named(tmp_path, line, message):
    (tmp_path / "videos").mkdir()
    (tmp_path / "list.txt").write_text(f"a/v1.mp4 0\n{line}\n")
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    with pytest.raises(BuildError, match=message) as error:
        build("bad", tmp_path / "videos", {"train": tmp_path / "list.txt"}, tmp_path / "tfds",
              classes=tmp_path / "classes.txt")
    assert "list.txt:2" in str(error.value)
    assert not (tmp_path / "tfds" / "video_classification" / "bad").exists()


def dense_expected(length, num_frames, rate, clips):
    """Sense-X `slowfast/datasets/kinetics.py` and `decoder.py`: offset sampling, linspace over the span, clamped,
    truncated."""
    span = num_frames * rate
    delta = max(length - span, 0)
    starts = [delta // 2] if clips == 1 else [k * (delta // (clips - 1)) for k in range(clips)]
    return [[int(min(max(s + j * (span - 1) / (num_frames - 1), 0), length - 1)) for j in range(num_frames)]
            for s in starts]


def segment_expected(length, num_frames, clips):
    """Sense-X `slowfast/datasets/sth.py`: segment starts round(seg * i), test frame start + int(seg / (views + 1) *
    (k + 1))."""
    seg = (length - 1) / num_frames
    return [[int(np.round(seg * i)) + int(seg / (clips + 1) * (k + 1)) for i in range(num_frames)]
            for k in range(clips)]


def eval_batches(source, split, sampling, views, batch_size=2, process_index=0, process_count=1):
    ds, part, steps = pipelines.eval_dataset(str(source), split, batch_size=batch_size, sampling=sampling, views=views,
                                        process_index=process_index, process_count=process_count)
    return list(ds.as_numpy_iterator()), part, steps


@pytest.mark.parametrize("mode, num_frames, rate, clips", [("dense", 8, 4, 4), ("dense", 16, 2, 1),
                                                           ("segment", 8, 1, 2)])
def test_test_views_hold_the_sampled_frames(dataset, mode, num_frames, rate, clips):
    sampling = pipelines.Sampling(num_frames, rate, mode)
    batches, part, steps = eval_batches(dataset, "validation", sampling, pipelines.TestViews(clips, 1, 48, 40))
    seen = 0
    for batch in batches:
        assert batch["video"].shape[1:] == (clips, num_frames, 40, 40, 3) and batch["video"].dtype == np.uint8
        for video, name, mask in zip(batch["video"], batch["name"], batch["mask"], strict=True):
            if not mask:
                assert not video.any()
                continue
            seen += 1
            n = VIDEOS[name.decode()][0]
            expected = (dense_expected(n, num_frames, rate, clips) if mode == "dense"
                        else segment_expected(n, num_frames, clips))
            assert [[frame_index(f) for f in clip] for clip in video] == expected
    assert seen == sum(part.counts) == 4 and steps == 2


def test_three_crops_span_the_longer_side_for_each_clip(dataset):
    batches, _, _ = eval_batches(dataset, "validation", pipelines.Sampling(4, 2), pipelines.TestViews(2, 3, 48, 48))
    for batch in batches:
        for video, name, mask in zip(batch["video"], batch["name"], batch["mask"], strict=True):
            if not mask:
                continue
            n, _, w, h, _ = VIDEOS[name.decode()]
            views = video.reshape(2, 3, *video.shape[1:])  # clip-major: view k * crops + j
            for clip, expected in zip(views, dense_expected(n, 4, 2, 2), strict=True):
                assert all([frame_index(f) for f in crop] == expected for crop in clip)
                green = clip[:, 0, 24, :, 1].astype(float)  # the left-to-right ramp, per crop
                if w > h:  # crops move left to right: left edge, centre, right edge
                    assert green[0, 0] < 20 and green[2, -1] > 235
                    assert green[0].mean() < green[1].mean() < green[2].mean()
                else:  # crops move top to bottom, all full width
                    assert np.allclose(green, green[1], atol=3)


def test_eval_counts_every_video_once_on_any_number_of_processes(dataset):
    sampling, views = pipelines.Sampling(4, 2), pipelines.TestViews(2, 1, 32, 32)
    names = set()
    for count in (1, 2, 3):
        indices, step_counts = [], set()
        for index in range(count):
            batches, part, steps = eval_batches(dataset, "validation", sampling, views, 1, index, count)
            assert len(batches) == steps
            step_counts.add(steps)
            indices += [int(i) for b in batches for i, m in zip(b["index"], b["mask"], strict=True) if m]
            names |= {n for b in batches for n, m in zip(b["name"], b["mask"], strict=True) if m}
        assert sorted(indices) == [0, 1, 2, 3] and len(step_counts) == 1
    assert len(names) == 4


def test_train_clips_are_deterministic_and_augmented(dataset):
    sampling = pipelines.Sampling(8, 4)
    aug = pipelines.TrainAugment(crop_size=32, randaugment=False, erasing=0.0, crop_scale=(0.3, 1.0))

    def first(seed, n=6):
        ds = pipelines.train_dataset(str(dataset), "train", batch_size=4, sampling=sampling, aug=aug, seed=seed)
        return [b for _, b in zip(range(n), ds.as_numpy_iterator(), strict=False)]

    a, b, c = first(0), first(0), first(1)
    assert all((x["video"] == y["video"]).all() and (x["label"] == y["label"]).all() for x, y in zip(a, b, strict=True))
    assert any((x["video"] != y["video"]).any() for x, y in zip(a, c, strict=True))
    directions = []
    for batch in a:
        assert batch["video"].shape == (4, 8, 32, 32, 3) and batch["video"].dtype == np.uint8
        for clip in batch["video"]:
            idx = [frame_index(f) for f in clip]
            steps = np.diff(idx)
            assert ((steps >= 0) & (steps <= 5)).all()  # dense stride (4 * 8 - 1) / 7 ~ 4.4, clamped at the end
            ramp = clip[0, 16, :, 1].astype(float)
            directions.append(np.sign(ramp[-1] - ramp[0]))
    assert {-1.0, 1.0} <= set(directions)  # horizontal flips happen, and not always


def test_repeated_augmentation_gives_two_different_clips_per_video(dataset):
    ds = pipelines.train_dataset(str(dataset), "train", batch_size=2, sampling=pipelines.Sampling(4, 2),
                               aug=pipelines.TrainAugment(crop_size=32, repeats=2), seed=3)
    batch = next(ds.as_numpy_iterator())
    assert batch["label"][0] == batch["label"][1]
    assert (batch["video"][0] != batch["video"][1]).any()


def test_train_stream_resumes_where_it_stopped_across_epochs(dataset):
    # 4 videos x 2 clips = 8 clips an epoch; batches of 3 cross clip, video and epoch boundaries.
    def batches(start, n):
        ds = pipelines.train_dataset(str(dataset), "train", batch_size=3, sampling=pipelines.Sampling(4, 2),
                                   aug=pipelines.TrainAugment(crop_size=32), seed=5, start=start)
        return [b for _, b in zip(range(n), ds.as_numpy_iterator(), strict=False)]

    whole = batches(0, 9)
    for stop in (1, 3, 5):
        resumed = batches(3 * stop, 9 - stop)
        for a, b in zip(whole[stop:], resumed, strict=True):
            np.testing.assert_array_equal(a["video"], b["video"])
            np.testing.assert_array_equal(a["label"], b["label"])
    labels = np.concatenate([b["label"] for b in whole])
    for epoch in (labels[:8], labels[8:16], labels[16:24]):  # every video twice an epoch (repeated augmentation)
        assert sorted(epoch) == [0, 0, 1, 1, 1, 1, 2, 2]
    clips = np.concatenate([b["video"] for b in whole])
    first, second = clips[:8], clips[8:16]
    assert not any((first[i] == second[j]).all() for i in range(8) for j in range(8))  # each epoch augments anew


def test_fixed_input_shards_give_the_same_global_batches_on_one_or_two_processes(dataset):
    def batches(process_index, process_count, start=0, n=4):
        ds = pipelines.train_dataset(str(dataset), "train", batch_size=4 // process_count,
                                     sampling=pipelines.Sampling(4, 2),
                                     aug=pipelines.TrainAugment(crop_size=32, randaugment=False), seed=2,
                                     process_index=process_index, process_count=process_count, shards=2, start=start)
        return [b for _, b in zip(range(n), ds.as_numpy_iterator(), strict=False)]

    one = batches(0, 1)
    two = zip(batches(0, 2), batches(1, 2), strict=True)
    for whole, (first, second) in zip(one, two, strict=True):
        for key in ("video", "label"):
            np.testing.assert_array_equal(whole[key], np.concatenate([first[key], second[key]]))
    for a, b in zip(one[2:], batches(0, 1, start=8, n=2), strict=True):  # 2 steps of 4 clips used
        np.testing.assert_array_equal(a["video"], b["video"])
    with pytest.raises(pipelines.DataError, match="3 input shards cannot be shared by 2"):
        pipelines.train_dataset(str(dataset), "train", batch_size=2, sampling=pipelines.Sampling(4, 2),
                           aug=pipelines.TrainAugment(crop_size=32), process_count=2, shards=3)


def test_normalise_matches_mmaction2_constants():
    video = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16, 1)
    expected = (video.astype(np.float64) - 114.75) / 57.375  # MMAction2's mean/std on the 0-255 scale
    np.testing.assert_allclose(np.asarray(normalise(video)), expected, atol=1e-5)


def test_batch_size_that_does_not_split_over_processes_and_devices_is_refused():
    assert pipelines.local_batch_size(16, 2, 4) == 8
    with pytest.raises(pipelines.DataError, match="multiple of 8"):
        pipelines.local_batch_size(12, 2, 4)


def dmvr_record(frames, label, name, one_feature_per_frame=True, text=None, jpegs=None):
    """A SequenceExample with the fields and layout of DMVR's examples/generate_from_file.py (`label` a class, or
    a list of them)."""
    jpegs = jpegs or [tf.io.encode_jpeg(f, quality=95).numpy() for f in frames]
    example = tf.train.SequenceExample()
    example.context.feature["clip/label/index"].int64_list.value.extend([label] if isinstance(label, int) else label)
    if text is not None:
        example.context.feature["clip/label/text"].bytes_list.value.append(text.encode())
    example.context.feature["video/filename"].bytes_list.value.append(name.encode())
    example.context.feature["clip/start/timestamp"].int64_list.value.append(0)
    example.context.feature["clip/end/timestamp"].int64_list.value.append(1_000_000 * len(jpegs) // 10)
    encoded = example.feature_lists.feature_list["image/encoded"]
    if one_feature_per_frame:
        for jpeg in jpegs:
            encoded.feature.add().bytes_list.value.append(jpeg)
    else:
        encoded.feature.add().bytes_list.value.extend(jpegs)
    return example.SerializeToString()


def test_dmvr_sequence_examples_are_read(tmp_path):
    lengths_ = [30, 9, 50]
    for shard in range(2):
        with tf.io.TFRecordWriter(str(tmp_path / f"val-{shard:05d}-of-00002")) as writer:
            for k, n in enumerate(lengths_[shard::2]):
                writer.write(dmvr_record([frame(i, 64, 48) for i in range(n)], shard + k, f"v{shard}{k}"))
    sampling = pipelines.Sampling(4, 3)
    views = pipelines.TestViews(2, 1, 48, 48)
    batches, part, steps = eval_batches(str(tmp_path / "val-*"), "validation", sampling, views)
    assert part.counts == [3] and steps == 2
    found = {}
    for batch in batches:
        for video, label, name, mask in zip(batch["video"], batch["label"], batch["name"], batch["mask"], strict=True):
            if mask:
                found[name.decode()] = (int(label), [[frame_index(f) for f in clip] for clip in video])
    expected_lengths = {"v00": 30, "v01": 50, "v10": 9}
    assert {n: lab for n, (lab, _) in found.items()} == {"v00": 0, "v01": 1, "v10": 1}
    for name, (_, clips) in found.items():
        assert clips == dense_expected(expected_lengths[name], 4, 3, 2)


def tensorflow_refuses(path: Path) -> str:
    """What TensorFlow's own reader says of a damaged file ("corrupted record at 4298")."""
    with pytest.raises(tf.errors.DataLossError) as refused:
        list(tf.data.TFRecordDataset(str(path)))
    return re.search(r"(corrupted|truncated) record at \d+", refused.value.message).group(0)


def test_damaged_records_are_slots_at_the_offsets_tensorflow_names_and_the_rest_are_read(tmp_path):
    """Records written by TensorFlow; a flipped data byte, a flipped length byte (after which TensorFlow reads
    nothing more of the file) and a cut; each damaged slot where TensorFlow names the damage, the rest intact."""
    written = [os.urandom(1000 + 37 * i) for i in range(10)]
    with tf.io.TFRecordWriter(str(tmp_path / "whole.tfrecord")) as writer:
        for record in written:
            writer.write(record)
    whole = (tmp_path / "whole.tfrecord").read_bytes()
    starts = [offset for _, offset, _ in records.slots(str(tmp_path / "whole.tfrecord"))]
    assert [r for r, _, ok in records.slots(str(tmp_path / "whole.tfrecord")) if ok] == written
    for name, damage, slot, count in [("data", starts[4] + 12 + 100, 4, None), ("length", starts[7] + 2, 7, None),
                                      ("cut", starts[9] + 500, 9, 12)]:
        data = bytearray(whole[:damage] if name == "cut" else whole)
        if name != "cut":
            data[damage] ^= 0xFF
        (tmp_path / name).write_bytes(bytes(data))
        read = list(records.slots(str(tmp_path / name), count))
        assert len(read) == (count or 10)
        assert [(r, ok) for r, _, ok in read[:10]] == [(b"", False) if i == slot else (r, True)
                                                      for i, r in enumerate(written)]
        assert f"record at {read[slot][1]}" in tensorflow_refuses(tmp_path / name)
        assert all(not ok and at == len(data) for _, at, ok in read[10:])  # records the cut file should hold


def test_reading_past_damage_gives_the_same_stream_where_there_is_none(dataset):
    def batches(**skip):
        ds = pipelines.train_dataset(str(dataset), "train", batch_size=4, sampling=pipelines.Sampling(4, 2),
                                     aug=pipelines.TrainAugment(crop_size=32), seed=5, shards=2, **skip)
        return [b for _, b in zip(range(6), ds.as_numpy_iterator(), strict=False)]

    met = []
    for a, b in zip(batches(), batches(on_skip=lambda *skip: met.append(skip)), strict=True):
        np.testing.assert_array_equal(a["video"], b["video"])
        np.testing.assert_array_equal(a["label"], b["label"])
    assert met == []


def test_a_damaged_dmvr_record_is_skipped_reported_and_resumed_past_exactly(tmp_path):
    """data.skip_corrupt's stream: the damaged record reported with TensorFlow's offset and the step it falls
    before, every other video once an epoch, and resumed streams the same as the whole one."""
    with tf.io.TFRecordWriter(str(tmp_path / "train-00000-of-00001")) as writer:
        for k in range(5):
            writer.write(dmvr_record([frame(i, 64, 48) for i in range(12)], k, f"v{k}"))
    path = tmp_path / "train-00000-of-00001"
    starts = [offset for _, offset, _ in records.slots(str(path))]
    data = bytearray(path.read_bytes())
    data[starts[2] + 40] ^= 0xFF  # video v2, label 2
    path.write_bytes(bytes(data))

    def batches(start, n):
        met = []
        ds = pipelines.train_dataset(str(path), "train", batch_size=3, sampling=pipelines.Sampling(4, 2),
                                     aug=pipelines.TrainAugment(crop_size=32, repeats=1), seed=5, start=start,
                                     on_skip=lambda *skip: met.append(skip))
        return [b for _, b in zip(range(n), ds.as_numpy_iterator(), strict=False)], met

    whole, met = batches(0, 8)
    labels = np.concatenate([b["label"] for b in whole])
    for epoch in range(6):  # 4 videos an epoch
        assert sorted(labels[4 * epoch:4 * epoch + 4]) == [0, 1, 3, 4]
    offset = int(tensorflow_refuses(path).split()[-1])
    assert [skip[:2] for skip in met[:5]] == [(str(path), offset)] * 5
    for epoch, (_, _, step) in enumerate(met[:5]):  # before the batch of the clip after it (3 a batch)
        assert 4 * epoch // 3 + 1 <= step <= (4 * epoch + 4) // 3 + 1
    for stop in (1, 3, 5):
        resumed, _ = batches(3 * stop, 8 - stop)
        for a, b in zip(whole[stop:], resumed, strict=True):
            np.testing.assert_array_equal(a["video"], b["video"])
            np.testing.assert_array_equal(a["label"], b["label"])


def test_dmvr_records_in_the_old_single_feature_layout_are_refused_when_opened(tmp_path):
    with tf.io.TFRecordWriter(str(tmp_path / "old.tfrecord")) as writer:
        writer.write(dmvr_record([frame(i, 32, 32) for i in range(6)], 0, "old", one_feature_per_frame=False))
    with pytest.raises(pipelines.DataError, match="layout from before 2022-02"):
        sources.open_split(str(tmp_path / "old.tfrecord"), "test")


def write_dmvr(path, classes, order):
    """Two videos of each class, labelled as DMVR's script labels them: indices in `order` (its set order)."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for k, name in enumerate(classes * 2):
            writer.write(dmvr_record([frame(i, 16, 16) for i in range(3)], order.index(name), f"v{k}", text=name))


def test_dmvr_class_names_come_from_the_records(tmp_path):
    order = ["moon", "zebra", "apple"]  # neither the class file's order nor sorted
    write_dmvr(tmp_path / "val.tfrecord", CLASSES, order)
    part = sources.open_split(str(tmp_path / "val.tfrecord"), "validation")
    assert part.class_names == order and part.read == str(tmp_path / "val.tfrecord")
    assert sources.class_names(part, None, "src") == order
    assert sources.class_names(part, ["Moon", "zebra", "apple"], "src") == ["Moon", "zebra", "apple"]
    with pytest.raises(pipelines.DataError, match="class 0 'apple', but src names it 'moon'"):
        sources.class_names(part, sorted(CLASSES), "src")
    with pytest.raises(pipelines.DataError, match="class 2 nothing"):
        sources.class_names(part, order[:2], "src")


def test_dmvr_records_that_contradict_each_other_or_carry_no_label_are_refused(tmp_path):
    with tf.io.TFRecordWriter(str(tmp_path / "bad.tfrecord")) as writer:
        writer.write(dmvr_record([frame(0, 16, 16)], 0, "a", text="moon"))
        writer.write(dmvr_record([frame(0, 16, 16)], 0, "b", text="zebra"))
    with pytest.raises(pipelines.DataError, match="class 0 is 'moon' in one record and 'zebra' in record 1"):
        sources.open_split(str(tmp_path / "bad.tfrecord"), "validation")
    example = tf.train.SequenceExample()
    example.feature_lists.feature_list["image/encoded"].feature.add().bytes_list.value.append(b"jpeg")
    with tf.io.TFRecordWriter(str(tmp_path / "unlabelled.tfrecord")) as writer:
        writer.write(example.SerializeToString())
    with pytest.raises(pipelines.DataError, match="record 0 has no `clip/label/index`"):
        sources.open_split(str(tmp_path / "unlabelled.tfrecord"), "validation")


def test_files_that_are_not_dmvr_records_are_refused(dataset, tmp_path):
    with pytest.raises(pipelines.DataError, match="no `image/encoded` frames"):
        sources.open_split(str(next(dataset.glob("*.tfrecord*"))), "validation")  # a TFDS file: an Example
    (tmp_path / "empty.tfrecord").write_bytes(b"")
    with pytest.raises(pipelines.DataError, match="hold no records"):
        sources.open_split(str(tmp_path / "empty.tfrecord"), "validation")
    (tmp_path / "text.tfrecord").write_text("not a record\n" * 10)
    with pytest.raises(pipelines.DataError, match="text.tfrecord"):
        sources.open_split(str(tmp_path / "text.tfrecord"), "validation")


def test_unknown_source_and_split_are_named(dataset, tmp_path):
    with pytest.raises(pipelines.DataError, match="neither a dataset directory"):
        sources.open_split(str(tmp_path / "nothing-*"), "train")
    with pytest.raises(pipelines.DataError, match="no split 'test'"):
        sources.open_split(str(dataset), "test")


WORKER = """
import sys, jax, numpy as np
jax.config.update("jax_num_cpu_devices", 2)
jax.distributed.initialize(coordinator_address="127.0.0.1:" + sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from jax.experimental import multihost_utils
from uniformer_jax import sharding
from uniformer_jax.data import pipelines
mesh = sharding.data_mesh()
local = pipelines.local_batch_size(4, jax.process_count(), jax.local_device_count())
ds, part, steps = pipelines.eval_dataset(sys.argv[3], "validation", batch_size=local,
                                         sampling=pipelines.Sampling(4, 2), views=pipelines.TestViews(2, 1, 32, 32),
                                         process_index=jax.process_index(), process_count=jax.process_count())
count = jax.jit(lambda b: b["mask"].sum())
seen = []
for batch in ds.as_numpy_iterator():
    batch = sharding.global_batch({"mask": batch["mask"], "index": batch["index"]}, mesh)
    seen.append(int(count(batch)))
    gathered = multihost_utils.process_allgather(batch["index"], tiled=True)
    mask = multihost_utils.process_allgather(batch["mask"], tiled=True)
    seen.extend(int(i) for i, m in zip(gathered, mask) if m)
print("RESULT", repr((steps, seen)), flush=True)
jax.distributed.shutdown()
"""


def test_two_processes_make_global_eval_batches_that_count_each_video_once(dataset, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, str(script), port, str(i), str(dataset)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    results = []
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
        results.append(next(line for line in out.splitlines() if line.startswith("RESULT")))
    assert results[0] == results[1]  # both processes see the same global batches
    steps, seen = ast.literal_eval(results[0].removeprefix("RESULT "))  # seen: count, its indices, count, ...
    counts, indices, k = [], [], 0
    while k < len(seen):
        counts.append(seen[k])
        indices += seen[k + 1:k + 1 + seen[k]]
        k += 1 + seen[k]
    assert steps == len(counts) == 1 and sum(counts) == 4 and sorted(indices) == [0, 1, 2, 3]


def test_beam_build_writes_the_same_dataset(dataset, tmp_path):
    root = dataset.parents[3]
    builder = build("tiny", root / "videos", {"train": root / "train.csv"}, tmp_path / "tfds",
                    classes=root / "classes.txt", short_side=SHORT_SIDE, beam=True,
                    beam_options=["--runner=DirectRunner"])
    beam_dir = Path(builder.data_dir)
    assert (beam_dir / "skipped-train.tsv").read_text().splitlines() == sorted(
        (dataset / "skipped-train.tsv").read_text().splitlines())
    ours, theirs = read_all(beam_dir, "train"), read_all(dataset, "train")
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        assert ours[name]["label"] == theirs[name]["label"]
        np.testing.assert_array_equal(ours[name]["video"], theirs[name]["video"])


def test_a_dataset_is_not_reused_for_other_settings(dataset):
    root = dataset.parents[3]
    with pytest.raises(BuildError, match="built from other videos, lists or settings"):
        build("tiny", root / "videos", {"train": root / "train.csv", "validation": root / "val.txt"}, root / "tfds",
              classes=root / "classes.txt", short_side=SHORT_SIDE + 2, workers=2)


def test_command_line_errors_are_one_line(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "list.txt").write_text("a.mp4 0\n")
    (tmp_path / "classes.txt").write_text("x\t0\ny\t5\n")
    result = subprocess.run([sys.executable, "-m", "uniformer_jax.dataset_builder", "--name=x",
                             f"--videos={tmp_path / 'videos'}", f"--train={tmp_path / 'list.txt'}",
                             f"--classes={tmp_path / 'classes.txt'}", f"--out={tmp_path / 'out'}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: label file")
    assert "Traceback" not in result.stderr and not (tmp_path / "out" / "video_classification").exists()
