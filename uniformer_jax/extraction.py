"""Features of long videos window by window, for temporal action localisation and retrieval.

The windows of many videos are batched over the local devices (one jitted step); videos are decoded on host
threads while the devices work. Each video's features (`<name>.npy`) and description (`<name>.json`: frames,
times and settings) are written whole, the JSON last, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import json
import queue
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from uniformer_jax import sharding, storage
from uniformer_jax.data import video
from uniformer_jax.data.class_folders import VIDEO_SUFFIXES
from uniformer_jax.data.windows import VideoWindows, Windows, window_spans
from uniformer_jax.models.layers import normalise
from uniformer_jax.models.uniformerv2 import UniFormerV2

LAYERS = ("pooled", "stage3", "stage4")
SETTINGS_FILE = "settings.json"


class ExtractionError(ValueError):
    """Inputs or an output folder that cannot be used; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the features are: the model, the windows and the layer; a folder of features has one."""
    checkpoint: str
    windows: Windows
    layer: str = "pooled"

    def as_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, **dataclasses.asdict(self.windows), "layer": self.layer}


def find_videos(inputs: list[str]) -> list[tuple[Path, str]]:
    """The video files to extract and their output names.

    Args:
      inputs: video files and folders (searched recursively for video files).

    Returns:
      (file, name) pairs in a fixed order: a file given directly is named by its stem, a file found in a folder by
      its path relative to that folder without the suffix.

    Raises:
      ExtractionError: an input that does not exist, a folder without videos, or two videos of one name.
    """
    found = []
    for given in map(Path, inputs):
        if given.is_dir():
            files = sorted(p for p in given.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
            if not files:
                raise ExtractionError(f"{given} holds no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
            found += [(p, str(p.relative_to(given).with_suffix(""))) for p in files]
        elif given.exists():
            found.append((given, given.stem))
        else:
            raise ExtractionError(f"{given}: no such file or folder")
    names: dict[str, Path] = {}
    for path, name in found:
        if names.setdefault(name, path) != path:
            raise ExtractionError(f"{names[name]} and {path} would both write {name}.npy: extract them into "
                                  "separate --out folders")
    return found


def check_settings(out: storage.Path, settings: Settings) -> None:
    """A folder of features has one set of settings: `out` must hold none yet, or these.

    Args:
      out: the output folder, local or in a bucket (gs://).
      settings: the run's settings.

    Raises:
      ExtractionError: the folder holds features of other settings.
    """
    marker = out / SETTINGS_FILE
    if not marker.is_file():
        return
    stored, wanted = json.loads(marker.read_text()), settings.as_dict()
    changed = sorted(k for k in stored.keys() | wanted.keys() if stored.get(k) != wanted.get(k))
    if changed:
        held = ", ".join(f"{k} {stored.get(k)!r}" for k in changed)
        raise ExtractionError(f"{out} holds features of other settings ({held}); give another --out, or the same "
                              "settings to resume")


def claim(out: storage.Path, settings: Settings) -> None:
    """Makes `out` the folder of these settings' features (`check_settings` first) and removes what killed runs
    left there; before any process writes into it.

    Args:
      out: the output folder, local or in a bucket (gs://).
      settings: the run's settings.
    """
    out.mkdir(parents=True, exist_ok=True)
    if not (out / SETTINGS_FILE).is_file():
        storage.write_whole(out / SETTINGS_FILE, json.dumps(settings.as_dict(), indent=2) + "\n")
    if not storage.is_url(out):  # an object store has no partial files: an upload appears whole
        for partial in Path(out).rglob("*.partial"):
            partial.unlink()


def is_done(out: storage.Path, name: str, settings: Settings) -> bool:
    """Whether a video's features are written whole with these settings (its JSON is written last).

    Args:
      out: the output folder, local or in a bucket (gs://).
      name: the video's output name.
      settings: the run's settings.

    Returns:
      True where `<name>.json` and `<name>.npy` exist and the JSON's settings are these.
    """
    described = out / f"{name}.json"
    if not described.is_file() or not (out / f"{name}.npy").is_file():
        return False
    return json.loads(described.read_text()).get("settings") == settings.as_dict()


def make_step(model, layer: str):
    """The jitted step: uint8 clips to float32 features of one layer.

    Args:
      model: the model.
      layer: `pooled` (the head's input), or `stage3` / `stage4` averaged over space.

    Returns:
      `step(variables, clips (B, T, P, P, 3) uint8) -> (B, C)` for `pooled`, `(B, T', C)` for a stage.

    Raises:
      ValueError: an unknown layer, or a stage of a UniFormerV2.
    """
    if layer not in LAYERS:
        raise ValueError(f"--layer is {layer!r}; use one of {', '.join(LAYERS)}")
    if layer != "pooled" and isinstance(model, UniFormerV2):
        raise ValueError(f"--layer {layer} is a UniFormer stage; a UniFormerV2 has none (use --layer pooled)")

    def step(variables, clips):
        maps = model.apply(variables, normalise(clips, model.dtype), method="features")
        if layer == "pooled":
            return maps["pooled"]
        return jnp.mean(maps[layer].astype(jnp.float32), axis=(2, 3))

    return jax.jit(step)


def _write_outputs(out: storage.Path, name: str, path: Path, settings: Settings, features: np.ndarray,
                   num_frames: int, fps: float) -> None:
    """`<name>.npy`, then `<name>.json`, each whole: a video counts as done only once both are there."""
    target = out / f"{name}.npy"
    target.parent.mkdir(parents=True, exist_ok=True)
    array = io.BytesIO()
    np.save(array, features.astype(np.float32))
    storage.write_whole(target, array.getvalue())
    w = settings.windows
    rows = ("windows" if settings.layer == "pooled" else
            f"windows x frame groups ({w.frames // features.shape[1]} sampled frames each)")
    description = {"video": str(path), "fps": fps, "num_frames": num_frames, "shape": list(features.shape),
                   "rows": rows, "settings": settings.as_dict(), "windows": window_spans(num_frames, fps, w)}
    storage.write_whole(out / f"{name}.json", json.dumps(description, indent=1) + "\n")


def extract(jobs: list[tuple[Path, str]], out: storage.Path, settings: Settings, model, variables, batch: int,
            workers: int = 4, progress=None) -> tuple[dict[str, str], int]:
    """Extracts the features of every job's video into `out`.

    Args:
      jobs: (video file, output name) pairs whose features are not yet written.
      out: the output folder (`claim`ed).
      settings: the windows and layer.
      model: the model (from `load_directory`).
      variables: its variables.
      batch: windows a step, a multiple of the local device count.
      workers: videos decoded at the same time.
      progress: called with `(videos done, windows per second)` after each video; None: nothing.

    Returns:
      The videos that could not be read (file -> reason), and the number of windows extracted.
    """
    mesh = sharding.data_mesh(jax.local_devices())  # each process extracts its own videos
    spread = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    variables = jax.device_put(variables, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    step = make_step(model, settings.layer)
    messages: queue.Queue = queue.Queue(maxsize=2 * batch)  # bounds the decoded clips held on the host
    stop = threading.Event()  # the main thread failed: decoding threads give up instead of waiting on the queue

    def put(message) -> bool:
        while not stop.is_set():
            try:
                messages.put(message, timeout=0.5)
                return True
            except queue.Full:
                pass
        return False

    def produce(index: int) -> None:
        windows = VideoWindows(jobs[index][0], settings.windows)
        try:
            for _, clip in windows:
                if not put(("window", index, clip)):
                    return
            put(("done", index, (windows.num_frames, windows.fps)))
        except video.VideoError as e:
            put(("error", index, str(e)))
        except Exception as e:  # not the video's fault: the main thread raises it
            put(("failed", index, e))

    rows: dict[int, list[np.ndarray]] = {i: [] for i in range(len(jobs))}
    queued = {i: 0 for i in range(len(jobs))}  # windows of each video waiting in `clips`
    finished: dict[int, tuple[int, float]] = {}
    skipped, clips, written = {}, [], set()
    windows_done, started = 0, time.perf_counter()

    def run_batch() -> None:
        nonlocal windows_done
        indices = [i for i, _ in clips]
        stack = np.stack([c for _, c in clips])
        stack = np.concatenate([stack, np.zeros((batch - len(stack), *stack.shape[1:]), np.uint8)])
        features = np.asarray(step(variables, jax.device_put(stack, spread)))
        for row, i in enumerate(indices):
            if i in rows:  # not a video that failed after its first windows
                rows[i].append(features[row])
            queued[i] -= 1
        windows_done += len(indices)
        clips.clear()

    def write_finished() -> None:
        for i, (num_frames, fps) in finished.items():
            if i not in written and queued[i] == 0:
                _write_outputs(out, jobs[i][1], jobs[i][0], settings, np.stack(rows.pop(i)), num_frames, fps)
                written.add(i)
                if progress:
                    progress(len(written) + len(skipped), windows_done / (time.perf_counter() - started))

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        try:
            for i in range(len(jobs)):
                pool.submit(produce, i)
            for _ in range(len(jobs)):  # each video ends with one message that is not a window
                kind, index, payload = messages.get()
                while kind == "window":
                    clips.append((index, payload))
                    queued[index] += 1
                    if len(clips) == batch:
                        run_batch()
                        write_finished()
                    kind, index, payload = messages.get()
                if kind == "failed":
                    raise payload
                if kind == "error":
                    skipped[str(jobs[index][0])] = payload
                    rows.pop(index)
                    if progress:
                        progress(len(written) + len(skipped), windows_done / (time.perf_counter() - started))
                else:
                    finished[index] = payload
                write_finished()
        finally:
            stop.set()
            pool.shutdown(cancel_futures=True)
    if clips:
        run_batch()
    write_finished()
    return skipped, windows_done
