"""Released UniFormer models by name: download, verify, convert once, and keep in a cache.

`resolve` turns what a user gives as a checkpoint (a release name, a `.pth` file, a converted directory) into a
converted directory, and `load_pretrained` loads it. The cache is `$UNIFORMER_JAX_CACHE` (default
`~/.cache/uniformer_jax`): `models/<name>` holds converted checkpoints, `downloads/` the published files.
`UNIFORMER_JAX_MIRROR` (a URL, a bucket or a directory) serves every file as `<mirror>/<published file name>`
instead of its sources, for clusters without internet. `python -m uniformer_jax.zoo` is its command line.

A cache in a bucket (`gs://...`) has no renames and no file locks. There, `models/<name>/` holds copies, each in a
directory of its own, and `CURRENT`, a pointer written last (one upload) that names the complete copy; readers
load what it names and ignore the rest. One process writes: a single process, or process 0 of a `jax.distributed`
run while the others wait for it. Published files are then kept on the local disk, in the temporary directory.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import jax
from flax import linen as nn

from uniformer_jax import storage
from uniformer_jax.weights import releases
from uniformer_jax.weights.checkpoints import METADATA_FILE, CheckpointError, load_directory
from uniformer_jax.weights.conversion import ConversionError, sha256, to_orbax
from uniformer_jax.weights.torch_files import require_torch

CACHE_ENV, MIRROR_ENV = "UNIFORMER_JAX_CACHE", "UNIFORMER_JAX_MIRROR"
INCOMING = ".incoming"  # downloads/ staging area: files not yet checked
POINTER = "CURRENT"  # in a bucket cache: names the complete copy of a model
_RESOLVES = itertools.count()  # resolve calls into a bucket cache, the same on every process: one key each
_WAIT_FOR_PROCESS_0_S = 2 * 3600  # a large release downloaded over a slow link and converted


class ZooError(CheckpointError):
    """A release that cannot be had or does not check out; the message says what to do."""


def cache_dir() -> Path | storage.Path:
    """The cache: `$UNIFORMER_JAX_CACHE`, default `~/.cache/uniformer_jax`.

    Returns:
      Its path (it may not exist yet): a local path, or a URL's `storage.Path`.
    """
    location = os.environ.get(CACHE_ENV) or "~/.cache/uniformer_jax"
    return storage.path(location) if storage.is_url(location) else Path(location).expanduser()


def _in_bucket() -> bool:
    return storage.is_url(cache_dir())


def _converted(name: str) -> Path | storage.Path:
    """The directory to load a release from: in a bucket, the copy `CURRENT` names (none yet: the bare folder,
    which holds no metadata)."""
    folder = cache_dir() / "models" / name
    if not _in_bucket() or not (folder / POINTER).is_file():
        return folder
    return folder / (folder / POINTER).read_text().strip()


def _downloads() -> Path:
    """Where published files are kept: the cache's `downloads/`, or for a bucket cache the local temporary
    directory (the converter reads local files)."""
    if _in_bucket():
        return Path(tempfile.gettempdir()) / "uniformer_jax-downloads"
    return cache_dir() / "downloads"


def is_cached(name: str) -> bool:
    """Whether a release's converted checkpoint is in the cache.

    Args:
      name: a release name.

    Returns:
      True when `models/<name>` holds a complete conversion.
    """
    return (_converted(name) / METADATA_FILE).is_file()


def resolve(checkpoint: str | Path, progress: bool = True) -> Path:
    """The converted directory for a release name, a PyTorch checkpoint file or a converted directory.

    Releases and files are fetched and converted into the cache on first use; under `jax.distributed` each process
    does so in a process of its own, or into a bucket cache process 0 alone while the others wait.

    Args:
      checkpoint: a release name, a `.pth` file or a converted directory (local, or a gs:// URL).
      progress: show download progress bars.

    Returns:
      A converted checkpoint directory.

    Raises:
      CheckpointError: the checkpoint cannot be had or does not check out; the message says what to do.
    """
    name, path = str(checkpoint), storage.path(checkpoint)
    release = name in releases.BY_NAME
    if not release and path.is_dir():  # a converted directory, local or in a bucket
        return path if storage.is_url(path) else Path(checkpoint)
    if not release and not path.is_file():
        raise ZooError(f"{checkpoint} is neither a converted checkpoint directory nor a PyTorch checkpoint file, and "
                       f"{releases.unknown(name)}")
    if jax.process_count() > 1 and _in_bucket():
        return _resolve_by_process_0(name)
    if release and is_cached(name):
        return _converted(name)
    if jax.process_count() > 1:
        return _resolve_alone(name)
    if release:
        return fetch(name, progress)
    return _convert_copy(path) if storage.is_url(path) else convert_file(path)


def _resolve_alone(checkpoint: str | Path) -> Path:
    """`resolve` in a process of its own. Under jax.distributed, Orbax would make a conversion a collective of all
    processes; the processes of a run rather each convert into their own (or a shared) cache, one at a time."""
    result = subprocess.run([sys.executable, "-m", "uniformer_jax.zoo", "fetch", str(checkpoint)],
                            capture_output=True, text=True)
    if result.returncode:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        raise ZooError(errors[-1].removeprefix("error: ") if errors else result.stderr.strip()[-2000:])
    return _path_of(result.stdout.strip().splitlines()[-1])


def _path_of(text: str) -> Path | storage.Path:
    return storage.path(text) if storage.is_url(text) else Path(text)


def _resolve_by_process_0(checkpoint: str) -> Path | storage.Path:
    """`resolve` into a bucket cache by one writer: process 0 resolves (`_resolve_alone`) and posts where the result
    is, or its error, in the coordination service's key-value store, where the others wait for it. (A collective
    would not do: the processes' first one gives up when they reach it more than 30 s apart.)"""
    import orbax.checkpoint as ocp

    client, key = ocp.multihost.get_jax_distributed_client(), f"uniformer_jax/resolve/{next(_RESOLVES)}"
    if jax.process_index() == 0:
        answer = {"path": None, "error": None}
        cached = checkpoint in releases.BY_NAME and is_cached(checkpoint)
        try:
            answer["path"] = str(_converted(checkpoint) if cached else _resolve_alone(checkpoint))
        except Exception as e:  # any failure must reach the others, or they would wait for it
            answer["error"] = str(e) or type(e).__name__
        client.key_value_set(key, json.dumps(answer))
    else:
        try:
            answer = json.loads(client.blocking_key_value_get(key, _WAIT_FOR_PROCESS_0_S * 1000))
        except jax.errors.JaxRuntimeError as e:
            raise ZooError(f"process 0 did not fetch {checkpoint} within {_WAIT_FOR_PROCESS_0_S // 60} minutes "
                           f"({e})") from None
    if answer["error"]:
        raise ZooError(answer["error"] if jax.process_index() == 0 else f"process 0: {answer['error']}")
    return _path_of(answer["path"])


def load_pretrained(checkpoint: str | Path, **model_kwargs) -> tuple[nn.Module, dict]:
    """A model and its variables from a release name, a PyTorch checkpoint file or a converted directory.

    `load_pretrained("k400_b32")` fetches, verifies and converts the release once, then reads it from the cache.

    Args:
      checkpoint: a release name (`python -m uniformer_jax.zoo list`), a `.pth` file or a converted directory.
      **model_kwargs: run-time options of the model: `dtype`, `attention`, `remat`, `drop_path_rate`.

    Returns:
      The Flax module, built for the checkpoint's variant and classes, and its variables (`params`, and
      `batch_stats` where the variant has BatchNorm).

    Raises:
      CheckpointError: the checkpoint cannot be had or does not check out; the message says what to do.
    """
    return load_directory(resolve(checkpoint), **model_kwargs)


def fetch(name: str, progress: bool = True) -> Path:
    """The converted checkpoint of a release: from the cache, else downloaded, verified and converted into it.

    Args:
      name: a release name (`releases.BY_NAME`).
      progress: show download progress bars.

    Returns:
      The release's directory in the cache.

    Raises:
      CheckpointError: an unknown name, a download that fails or does not match its published sha256, no network
        and no copy, or a file the converter refuses.
    """
    if name not in releases.BY_NAME:
        raise ZooError(releases.unknown(name))
    release = releases.BY_NAME[name]
    if is_cached(name):
        return _converted(name)
    _require_torch()  # before a download that could not be converted
    with _lock(name):
        if is_cached(name):  # another process finished it while this one waited
            return _converted(name)
        source, origin = _obtain(release, progress)
        downloads = _downloads()
        try:
            actual = _verify(release, source, origin)
            _convert(source, actual, name, form=release.form, labels=release.classes, release=release,
                     context=f"{release.name} ({origin}, sha256 {actual})")
        except ZooError:
            if downloads in source.parents:
                source.unlink(missing_ok=True)  # nothing that failed its checks stays in the cache
            raise
        if source.parent == downloads / INCOMING:
            os.replace(source, downloads / release.file)
    return _converted(name)


def convert_file(path: Path) -> Path:
    """A PyTorch checkpoint file converted through the cache, keyed by its sha256.

    A file that is a release (same sha256) gets that release's conversion (form, class names).

    Args:
      path: a `.pth` file.

    Returns:
      Its converted directory in the cache.

    Raises:
      CheckpointError: torch is missing or the converter refuses the file.
    """
    _require_torch()
    digest = sha256(path)
    release = next((r for r in releases.RELEASES if r.sha256 == digest), None)
    name = release.name if release else f"files/{digest[:16]}"
    with _lock(name):
        if not is_cached(name):
            _convert(path, digest, name, form=release.form if release else None,
                     labels=release.classes if release else None, release=release, context=str(path))
    return _converted(name)


def _convert_copy(url: storage.Path) -> Path | storage.Path:
    """`convert_file` of a PyTorch file in a bucket, through a local copy (PyTorch reads local files) removed
    afterwards."""
    import tensorflow as tf

    incoming = _downloads() / INCOMING
    incoming.mkdir(parents=True, exist_ok=True)
    local = incoming / f"{uuid.uuid4().hex[:8]}-{url.name}"
    try:
        tf.io.gfile.copy(os.fspath(url), str(local))
        return convert_file(local)
    finally:
        local.unlink(missing_ok=True)


def _require_torch() -> None:
    try:
        require_torch()
    except ConversionError as e:
        raise ZooError(str(e)) from None


def _lock(name: str):
    """A file lock in a local cache; none in a bucket, where one process writes (`_resolve_by_process_0`) and
    concurrent runs each write a copy of their own, the last pointer winning."""
    if _in_bucket():
        return contextlib.nullcontext()
    from filelock import FileLock

    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / (name.replace("/", "--") + ".lock")))


def _mirror() -> str | None:
    mirror = os.environ.get(MIRROR_ENV)
    return mirror.removeprefix("file://") if mirror else None


def _obtain(release: releases.Release, progress: bool) -> tuple[Path, str]:
    """The published file, and where it came from (for messages)."""
    kept = _downloads() / release.file
    if kept.is_file():
        return kept, str(kept)
    mirror = _mirror()
    if mirror and storage.is_url(mirror) and not mirror.startswith(("http://", "https://")):
        return _from_bucket(release, mirror), f"{mirror.rstrip('/')}/{release.file}"
    if mirror and "://" not in mirror:
        path = Path(mirror) / release.file
        if not path.is_file():
            raise ZooError(f"{release.name}: the mirror directory {mirror} has no {release.file}; put the file there "
                           f"or unset {MIRROR_ENV}")
        return path, str(path)
    if mirror:
        url = f"{mirror.rstrip('/')}/{release.file}"
        return _download(release, url, progress, url=url), url
    if release.hub:
        return _from_hub(release), release.source
    return _download(release, release.source, progress, url=release.url, drive=release.drive), release.source


def _offline_hint(release: releases.Release) -> str:
    return (f"Without network, put {release.file} into a directory and set {MIRROR_ENV} to it, or copy it to "
            f"{_downloads() / release.file}")


def _from_bucket(release: releases.Release, mirror: str) -> Path:
    """The published file copied from a bucket mirror into the staging area."""
    import tensorflow as tf

    source = storage.path(mirror) / release.file
    if not source.is_file():
        raise ZooError(f"{release.name}: the mirror {mirror} has no {release.file}; put the file there or unset "
                       f"{MIRROR_ENV}")
    incoming = _downloads() / INCOMING
    incoming.mkdir(parents=True, exist_ok=True)
    tf.io.gfile.copy(os.fspath(source), str(incoming / release.file), overwrite=True)
    return incoming / release.file


def _from_hub(release: releases.Release) -> Path:
    from huggingface_hub import hf_hub_download  # HF_ENDPOINT, HF_HUB_OFFLINE and its cache apply

    try:
        return Path(hf_hub_download(release.hub, release.file))
    except Exception as e:  # the Hub client raises many types (offline, HTTP, timeouts); all mean "not fetched"
        raise ZooError(f"cannot download {release.name} from {release.source}: {_first_line(e)}. "
                       f"{_offline_hint(release)}") from None


def _download(release: releases.Release, origin: str, progress: bool, url=None, drive=None) -> Path:
    """Downloads into the cache's staging area; an interrupted download is resumed by the next call."""
    import gdown

    incoming = _downloads() / INCOMING
    incoming.mkdir(parents=True, exist_ok=True)
    staged = incoming / release.file
    try:
        gdown.download(url=url, id=drive, output=str(staged), quiet=not progress, resume=True,
                       log_messages={"start": f"Downloading {release.name} from {origin}\n", "output": ""})
    except Exception as e:  # requests, gdown and OS errors alike
        raise ZooError(f"cannot download {release.name} from {origin}: {_first_line(e)}. "
                       f"{_offline_hint(release)}") from None
    return staged


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _verify(release: releases.Release, path: Path, origin: str) -> str:
    """The file's sha256, checked against the published hash (or prefix) where there is one."""
    actual = sha256(path)
    if release.sha256 and not actual.startswith(release.sha256):
        raise ZooError(f"{release.name}: {origin} gave a file whose sha256 is {actual}, expected {release.sha256}"
                       f"{'...' if len(release.sha256) < 64 else ''}; nothing was cached. The download may be "
                       "truncated or an error page: try again, or check the mirror's copy")
    return actual


def _convert(source: Path, digest: str, name: str, *, form, labels, release, context: str) -> None:
    """Converts into a staging directory, then renames it into place: a reader sees all of it or nothing. In a
    bucket, into a copy of its own, then names it in `CURRENT`."""
    extra = {"release": release.name if release else None}
    folder = cache_dir() / "models" / name
    if _in_bucket():
        copy = folder / uuid.uuid4().hex[:12]
        try:
            to_orbax(source, copy, form=form, labels=labels, extra=extra, source_sha256=digest)
        except ConversionError as e:
            if copy.exists():  # no pointer names it, so no reader would load it; nor should it take space
                copy.rmtree()
            raise ZooError(f"{context} is not a usable checkpoint: {e}") from None
        storage.write_whole(folder / POINTER, copy.name + "\n")
        return
    destination = folder
    staging = destination.parent / f".staging-{destination.name}-{uuid.uuid4().hex[:8]}"
    try:
        to_orbax(source, staging / "checkpoint", form=form, labels=labels, extra=extra, source_sha256=digest)
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            (staging / "checkpoint").rename(destination)
        except OSError:
            if not (destination / METADATA_FILE).is_file():  # else another process put its copy there first
                raise
    except ConversionError as e:
        raise ZooError(f"{context} is not a usable checkpoint: {e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
