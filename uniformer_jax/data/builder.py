"""A TFDS builder that turns a folder of videos and list files into sharded TFRecords of JPEG frames.

`build` writes `<out>/video_classification/<name>/1.0.0`, which `uniformer_jax.data.sources` reads and where
eval.py and train.py find a config's dataset by name. List files may be Sense-X/SlowFast csv (`path,label`),
MMAction2 (`path label`), the official Kinetics csv (`label,youtube_id,time_start,time_end,split`) or Charades'
csv (`id,...,actions,...`); csv and MMAction2 lines may give several labels (`path,1;4`, `path 1,4`), as Charades'
actions do, which makes the dataset multi-label (its `label` a sequence of classes). Videos that cannot be
decoded are skipped and listed, with the reason, in `skipped-<split>.tsv` next to the records.
`python -m uniformer_jax.dataset_builder` is its command line.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import functools
import json
import multiprocessing
import os
import re
import shutil
from pathlib import Path

import filelock
import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from uniformer_jax import storage
from uniformer_jax.data import class_lists
from uniformer_jax.data.class_folders import VIDEO_SUFFIXES, read_class_folders
from uniformer_jax.data.video import Video, jpeg_frames

SPLITS = ("train", "validation", "test")


def dataset_dir(name: str, data_dir: str | None = None) -> storage.Path:
    """Where the builder writes dataset `name`: in `data_dir`, else TFDS's default data directory.

    Args:
      name: a dataset name (`dataset_builder --name`).
      data_dir: a TFDS data directory, local or a URL; None: `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`.

    Returns:
      `<data_dir>/video_classification/<name>/1.0.0`.
    """
    root = data_dir or tfds.core.constants.get_default_data_dir()
    return storage.path(root) / VideoClassification.name / name / str(VideoClassification.VERSION)


class BuildError(ValueError):
    """Lists, class files or settings that cannot be built; the message names the file and line, or the clash."""


@dataclasses.dataclass(frozen=True)
class Entry:
    key: str  # unique within the split: the line number, or the path
    path: str  # relative to the video folder
    labels: tuple[int, ...] | None  # None: not used, for `problem`
    problem: str = "the list gives no label"


def _files_by_stem(video_dir: Path) -> dict[str, str]:
    """Stems of the video files under video_dir (recursively) and their YouTube ids, to relative paths: the
    files Kinetics and Charades csv rows name by id."""
    found = {}
    for path in sorted(video_dir.rglob("*")):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            relative = str(path.relative_to(video_dir))
            found.setdefault(path.stem, relative)
            found.setdefault(path.stem[:11], relative)
    return found


# `path 1,4` (MMAction2 with several labels) is tried first: `path,1;4` (csv) would read its commas as the csv's.
_SPACED = re.compile(r"(.+?)\s+(-?\d+(?:,-?\d+)*)")
_CSV = re.compile(r"(.+),\s*(-?\d+(?:;-?\d+)*)")


def read_list(path: Path, video_dir: Path, class_names: list[str] | None, find_files=_files_by_stem
              ) -> tuple[list[Entry], list[str]]:
    """The entries of one list file, and the label names it uses when its labels are names (Kinetics csv).

    Args:
      path: a Sense-X/SlowFast csv (`path,label`, or `path,l1;l2` for several), MMAction2 (`path label`, or
        `path l1,l2`), official Kinetics csv or Charades csv (`Charades_v1_train.csv`) list.
      video_dir: the folder the list's paths are relative to.
      class_names: the class list, to check labels against; None accepts any.
      find_files: indexes the video files under `video_dir` that Kinetics and Charades rows name by id.

    Returns:
      The entries (file, labels or label name) and the label names used.

    Raises:
      BuildError: an unreadable line, or a label outside `class_names` (naming file and line).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BuildError(f"cannot read list file {path}: {e}") from None
    rows = [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
    if not rows:
        raise BuildError(f"list file {path} is empty")
    if rows[0][1].replace(" ", "").startswith("label,youtube_id,time_start,time_end"):
        return _read_kinetics_csv(path, rows, find_files(video_dir), class_names)
    if rows[0][1].startswith("id,") and "actions" in next(csv.reader([rows[0][1]])):
        return _read_charades_csv(path, "\n".join(lines), find_files(video_dir), class_names), []
    entries = []
    for n, line in rows:
        match = _SPACED.fullmatch(line) or _CSV.fullmatch(line)
        if not match:
            raise BuildError(f"{path}:{n}: expected `path,label` (Sense-X csv) or `path label` (MMAction2) "
                             f"with integer labels (`path,1;4` or `path 1,4` for several), got {line!r}")
        labels = tuple(dict.fromkeys(int(x) for x in re.split("[,;]", match.group(2))))
        for label in labels:
            if label < 0 or (class_names is not None and label >= len(class_names)):
                known = f"0..{len(class_names) - 1}" if class_names else "0 or more"
                raise BuildError(f"{path}:{n}: label {label} is outside the classes ({known})")
        entries.append(Entry(str(n), match.group(1).strip(), labels))
    return entries, []


def _read_kinetics_csv(path: Path, rows, files: dict[str, str], class_names: list[str] | None
                       ) -> tuple[list[Entry], list[str]]:
    known = None if class_names is None else {class_lists.canonical(n) for n in class_names}
    entries, names = [], []
    for (n, _), row in zip(rows[1:], csv.reader([line for _, line in rows[1:]]), strict=True):
        if len(row) < 4:
            raise BuildError(f"{path}:{n}: expected `label,youtube_id,time_start,time_end,split`, got {row}")
        label, youtube_id, start, end = (field.strip() for field in row[:4])
        if known is not None and class_lists.canonical(label) not in known:
            raise BuildError(f"{path}:{n}: label {label!r} is not one of the {len(class_names)} classes given with "
                             "--classes; give the class list this file's labels come from")
        stem = f"{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}"
        relative = files.get(stem) or files.get(youtube_id) or stem + ".mp4"
        entries.append(Entry(str(n), relative, None))
        names.append(label)
    return entries, names


def _read_charades_csv(path: Path, text: str, files: dict[str, str], class_names: list[str] | None
                       ) -> list[Entry]:
    """Charades' own lists: a video's actions are `c092 11.90 21.20;c147 0.00 12.60` (class code, start, end), the
    classes `c000`..`c156` in the order of Charades_v1_classes.txt; a video with none is listed as skipped."""
    entries = []
    reader = csv.DictReader(text.splitlines(keepends=True))
    for row in reader:
        n = reader.line_num
        video = (row.get("id") or "").strip()
        if not video or row.get("actions") is None:
            raise BuildError(f"{path}:{n}: expected Charades' `id,...,actions,...` columns, got {row}")
        codes = [a.split()[0] for a in row["actions"].split(";") if a.strip()]
        if not all(re.fullmatch(r"c\d{3}", c) for c in codes):
            raise BuildError(f"{path}:{n}: actions {row['actions']!r} are not Charades' `c092 11.90 21.20;...`")
        labels = tuple(dict.fromkeys(int(c[1:]) for c in codes))
        if class_names is not None and any(label >= len(class_names) for label in labels):
            raise BuildError(f"{path}:{n}: action {max(labels):03d} is outside the {len(class_names)} classes "
                             "of --classes; give Charades_v1_classes.txt")
        entries.append(Entry(str(n), files.get(video) or video + ".mp4", labels or None,
                             "no action is labelled in the list"))
    return entries


def resolve_labels(lists: dict[str, tuple[list[Entry], list[str]]], class_names: list[str] | None
                   ) -> tuple[dict[str, list[Entry]], list[str]]:
    """Entries with integer labels, and the class names: the given order, else sorted names, else "0".."K-1".

    Args:
      lists: `read_list`'s result by split.
      class_names: the class list; None derives it.

    Returns:
      The entries by split with integer labels, and the class names in index order (`read_list` has checked
      the label names against a given class list).
    """
    named = {name for _, names in lists.values() for name in names if name}
    if class_names is None:
        if named:
            class_names = sorted(named)
        else:
            top = max((label for entries, _ in lists.values() for e in entries for label in e.labels or ()),
                      default=-1)
            class_names = [str(i) for i in range(top + 1)]
    index = {class_lists.canonical(n): i for i, n in enumerate(class_names)}
    out = {}
    for split, (entries, names) in lists.items():
        if names:
            entries = [dataclasses.replace(e, labels=(index[class_lists.canonical(n)],) if n else None)
                       for e, n in zip(entries, names, strict=True)]
        out[split] = entries
    return out, class_names


@dataclasses.dataclass
class VideoConfig(tfds.core.BuilderConfig):
    """Where the lists are and how frames are stored; `name` names the dataset (e.g. k400)."""
    videos: str = ""  # the folder the list files' paths are relative to, or of class folders
    lists: tuple[tuple[str, str], ...] = ()  # (split, list file); none: `videos` is a tree of class folders
    val_fraction: float | None = None  # class folders without split folders: the part held out (None: 0.2)
    seed: int | None = None  # ... and the seed that picks it (None: 0)
    classes: str | None = None  # class list file: one name per line, or `name<TAB>index` / `name index`
    short_side: int = 320
    fps: float | None = None  # None keeps the native frame rate
    jpeg_quality: int = 90


class VideoClassification(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Videos with their class label (or labels: `multi_label`), stored as per-frame JPEGs (`tfds.features.Video`)."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put the video files under one folder (any sub-folders) and pass it as the manual directory; list files give
    each video's path relative to that folder and its label.
    """

    def __init__(self, *, workers: int | None = None, beam: bool = False, **kwargs):
        self._workers = workers or os.cpu_count()
        self._beam = beam
        self._lists = None
        super().__init__(**kwargs)

    def _read_lists(self) -> tuple[dict[str, list[Entry]], list[str]]:
        if self._lists is None:
            config, video_dir = self.builder_config, Path(self.builder_config.videos)
            classes = class_lists.read_class_names(config.classes) if config.classes else None
            if not config.lists:
                splits, names = read_class_folders(video_dir, classes, config.val_fraction, config.seed)
                self._lists = ({split: [Entry(f.path, f.path, None if f.label is None else (f.label,),
                                              f.problem or "") for f in found]
                                for split, found in splits.items()}, names)
                return self._lists
            find_files = functools.cache(_files_by_stem)  # one scan of the video tree for all the lists
            self._lists = resolve_labels({split: read_list(Path(path), video_dir, classes, find_files)
                                          for split, path in config.lists}, classes)
        return self._lists

    def multi_label(self) -> bool:
        """Whether a video has several labels: then `label` is a sequence of classes (`Sequence(ClassLabel)`)."""
        return any(len(e.labels or ()) > 1 for entries in self._read_lists()[0].values() for e in entries)

    def _info(self) -> tfds.core.DatasetInfo:
        label = tfds.features.ClassLabel(names=self._read_lists()[1])
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "video": tfds.features.Video((None, None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.Sequence(label) if self.multi_label() else label,
                "name": tfds.features.Text(),
                "fps": tfds.features.Scalar(np.float32),
                "num_frames": tfds.features.Scalar(np.int32),
                # degrees counterclockwise the coded frames were turned to stand upright (display matrix)
                "rotation": tfds.features.Scalar(np.int32),
            }),
            supervised_keys=("video", "label"),
        )

    def _log_download_bytes(self):
        pass  # TFDS's "Downloading and preparing dataset Unknown size": main() prints what was written instead

    def _log_download_done(self):
        pass

    def _split_generators(self, dl_manager):
        del dl_manager  # the videos folder is part of the config: listing Kinetics files needs it earlier
        return {split: self._generate_examples(split, entries)
                for split, entries in self._read_lists()[0].items()}

    def _encode_args(self, entry: Entry) -> tuple:
        config = self.builder_config
        return (str(Path(config.videos) / entry.path), config.short_side, config.fps, config.jpeg_quality)

    def _generate_examples(self, split: str, entries: list[Entry]):
        report = self.data_path / f"skipped-{split}.tsv"
        if self._beam:
            return _beam_examples(entries, [self._encode_args(e) for e in entries], str(report), self.multi_label())
        return self._examples_in_pool(split, entries, report)

    def _examples_in_pool(self, split: str, entries: list[Entry], report: storage.Path):
        skipped, multi = [], self.multi_label()
        # forkserver: TensorFlow's threads make plain fork unsafe.
        context = multiprocessing.get_context("forkserver")
        with (concurrent.futures.ProcessPoolExecutor(self._workers, mp_context=context) as pool,
              tqdm(total=len(entries), desc=f"{self.builder_config.name} {split}", unit="video") as bar):
            results = pool.map(_encode, [self._encode_args(e) for e in entries], chunksize=4)
            for entry, result in zip(entries, results, strict=True):
                bar.update()
                example = _example(entry, result, multi)
                if isinstance(example, str):
                    skipped.append(_report_line(entry.path, example))
                else:
                    yield entry.key, example
        _write_report(str(report), skipped)


def _encode(args: tuple) -> Video | str:
    return jpeg_frames(*args)


def _example(entry: Entry, result: Video | str, multi_label: bool) -> dict | str:
    """The example for one video (its labels a list in a multi-label dataset), or the reason it is skipped."""
    if entry.labels is None:
        return entry.problem
    if isinstance(result, str):
        return result
    label = list(entry.labels) if multi_label else entry.labels[0]
    return {"video": result.frames, "label": label, "name": entry.path, "fps": result.fps,
            "num_frames": len(result.frames), "rotation": result.rotation}


def _report_line(path: str, reason: str) -> str:
    return f"{path}\t{' '.join(reason.split())}"


def _write_report(path: str, lines: list[str]) -> None:
    storage.path(path).write_text("".join(line + "\n" for line in lines))  # also gs:// on Beam workers


def _beam_examples(entries: list[Entry], encode_args: list[tuple], report: str, multi_label: bool):
    """The Beam form of the split: decoding runs on the Beam workers, skipped videos go to the report."""
    import apache_beam as beam

    class Examples(beam.PTransform):
        def expand(self, root):
            results = (root | "Entries" >> beam.Create(list(zip(entries, encode_args, strict=True)))
                       | "Encode" >> beam.Map(lambda item: (item[0], _example(item[0], _encode(item[1]), multi_label)))
                       | "Route" >> beam.Partition(lambda item, _: int(isinstance(item[1], str)), 2))
            (results[1] | "Lines" >> beam.Map(lambda item: _report_line(item[0].path, item[1]))
             | "Report" >> beam.combiners.ToList()
             | "Write" >> beam.Map(lambda lines: _write_report(report, sorted(lines))))
            return results[0] | "Keyed" >> beam.Map(lambda item: (item[0].key, item[1]))

    return Examples()


def _class_list(classes: str | None) -> str | None:
    """A packaged list's short name as it is, a file by its absolute path."""
    if classes is None or classes in class_lists.CLASS_LISTS:
        return classes
    return str(Path(classes).resolve())


def build(name: str, videos: str, lists: dict[str, str], out: str, *, classes: str | None = None,
          short_side: int = 320, fps: float | None = None, jpeg_quality: int = 90, workers: int | None = None,
          beam: bool = False, beam_options: list[str] = (), val_fraction: float | None = None,
          seed: int | None = None) -> VideoClassification:
    """Builds the dataset (or finds it already built with the same settings) and returns its builder.

    Args:
      name: the dataset's name, the folder under `<out>/video_classification`.
      videos: the folder holding the video files the lists name, or, without lists, a tree of class folders
        (`class_folders.read_class_folders`).
      lists: list file by split (`train`, `validation`, `test`): Sense-X/SlowFast csv, MMAction2 or Kinetics csv;
        empty for class folders.
      out: the TFDS data directory to write into.
      classes: a class list file or packaged short name giving the class indices; None: the sorted label
        names, or the integer labels.
      short_side: resize frames so the shorter side has this many pixels; 0 keeps them.
      fps: resample to this frame rate as ffmpeg's fps filter does; None keeps the native rate.
      jpeg_quality: JPEG quality of the stored frames.
      workers: decoding processes; None: all cores.
      beam: build through an Apache Beam pipeline (the `beam` extra).
      beam_options: Beam pipeline options, e.g. `--runner=DataflowRunner`.
      val_fraction: class folders without split folders: the part of each class held out; None: 0.2.
      seed: the seed of that split; None: 0.

    Returns:
      The TFDS builder; `builder.data_dir` is the dataset directory, `builder.info.splits` its example counts.

    Raises:
      BuildError: the dataset exists with other settings, another build is writing it, or a list names a
        class outside `classes`.
      FolderError: a tree of class folders that cannot be read as a dataset (the message says why).
    """
    if lists and (val_fraction, seed) != (None, None):
        raise BuildError("--val_fraction and --seed split a folder of class folders; with list files, give a "
                         "list for each split")
    settings = dict(videos=str(Path(videos).resolve()),
                    lists=tuple(sorted((s, str(Path(p).resolve())) for s, p in lists.items())),
                    classes=_class_list(classes), short_side=short_side or 0, fps=fps,
                    jpeg_quality=jpeg_quality)
    if not lists:  # only then, so that list-built datasets keep the settings they were built with
        settings.update(val_fraction=val_fraction, seed=seed)
    # The settings go into the stored dataset info, so a rebuild with other settings cannot reuse the old data.
    config = VideoConfig(name=name, description=json.dumps(settings, sort_keys=True), **settings)
    builder = VideoClassification(config=config, data_dir=out, workers=workers, beam=beam)
    stored = storage.path(builder.data_dir) / "dataset_info.json"
    if stored.exists() and json.loads(stored.read_text()).get("configDescription") != config.description:
        raise BuildError(f"{builder.data_dir} was built from other videos, lists or settings; choose another "
                         f"--name, or remove that directory to rebuild it")
    download_config = tfds.download.DownloadConfig(manual_dir=config.videos)
    if beam:
        from apache_beam.options.pipeline_options import PipelineOptions
        download_config.beam_options = PipelineOptions(list(beam_options))
    with _only_build(storage.path(builder.data_dir).parent, str(builder.version)):
        builder.download_and_prepare(download_config=download_config)
    return builder


@contextlib.contextmanager
def _only_build(folder: storage.Path, version: str):
    """One build of a dataset at a time; what killed builds left (TFDS's `incomplete.*` folders) is removed first.
    Local folders only: object stores have no locks (a Beam build there cleans up after itself or not at all)."""
    if storage.is_url(folder):
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with filelock.FileLock(str(folder / ".build.lock"), timeout=0):
            for stale in folder.glob(f"incomplete.*_{version}"):
                shutil.rmtree(stale, ignore_errors=True)
            yield
    except filelock.Timeout:
        raise BuildError(f"another build of {folder.name} is writing {folder}; wait for it to finish") from None
