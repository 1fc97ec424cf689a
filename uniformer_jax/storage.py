"""Paths that may be URLs: a local disk, or an object store such as `gs://` (any filesystem `tf.io.gfile` reaches),
through one module, so that no `os.path` or `pathlib` call meets a URL.

What is atomic where: on a local disk a file is written beside its place and renamed into it (POSIX renames are
atomic); an object store has no renames, but an object becomes visible only when its upload completes, so one
object written in one upload is whole or absent.
"""

from __future__ import annotations

import glob as local_glob
import os
from typing import IO

from etils import epath

Path = epath.Path  # a local path or a URL, with pathlib's methods


def path(location: str | os.PathLike) -> Path:
    """A path to `location`, local or a URL.

    Args:
      location: a local path, or a URL such as `gs://bucket/dir`.

    Returns:
      An `epath.Path`: pathlib's interface, over TensorFlow's filesystems for URLs.
    """
    return epath.Path(location)


def is_url(location: str | os.PathLike) -> bool:
    """Whether `location` names an object store or another remote filesystem (`scheme://...`).

    Args:
      location: a path or URL.

    Returns:
      True for `gs://...` and the like.
    """
    return "://" in os.fspath(location)


def absolute(location: str | os.PathLike) -> Path:
    """`location` made absolute: a local path from the working directory; a URL as it is.

    Args:
      location: a local path or a URL.

    Returns:
      The absolute path (Orbax wants one).
    """
    return path(location) if is_url(location) else path(location).absolute()


def glob(pattern: str) -> list[str]:
    """The files a pattern matches, sorted, on whichever filesystem it names.

    Args:
      pattern: a shell pattern (`*`, `?`, `[...]`), local or a URL (`gs://bucket/k400/val-*`).

    Returns:
      The matching paths, sorted.
    """
    if not is_url(pattern):
        return sorted(local_glob.glob(pattern))
    import tensorflow as tf  # URLs only: a local pattern needs no TensorFlow

    return sorted(tf.io.gfile.glob(pattern))


def open_append(target: str | os.PathLike) -> IO[str]:
    """A text file opened to append to, local or a URL.

    An object store cannot append: TensorFlow's filesystem keeps the object's content and uploads all of it again at
    each `flush`, so each flush leaves a whole object (the old one until the upload completes).

    Args:
      target: the file, created if missing.

    Returns:
      A file object (`write`, `flush`, `close`).
    """
    if not is_url(target):
        return open(target, "a")
    import tensorflow as tf

    return tf.io.gfile.GFile(os.fspath(target), "a")


def write_whole(target: str | os.PathLike, data: str | bytes) -> None:
    """Writes a file whole or not at all: a run stopped while writing leaves the previous file (or none).

    Args:
      target: where to write, local or a URL.
      data: the file's text (UTF-8) or bytes.
    """
    target = path(target)
    content = data.encode() if isinstance(data, str) else data
    if is_url(target):  # one upload: the object appears when it completes, never in part
        target.write_bytes(content)
        return
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(content)
    partial.replace(target)
