"""A checkpoint made ready for video files: its directory, class names and test protocol, and a file's views."""

from __future__ import annotations

import dataclasses

import numpy as np

from uniformer_jax import evaluation, recipes
from uniformer_jax.data import class_lists, pipelines, video
from uniformer_jax.weights import hub, releases
from uniformer_jax.weights.checkpoints import read_metadata

NO_CHECKPOINT = ("set --checkpoint to a released model's name (python -m uniformer_jax.zoo list), a converted "
                 "directory or a .pth file")


def checkpoint_of(flag: str | None, config) -> str | None:
    """The checkpoint a command runs: its --checkpoint, else its config's checkpoint or release.

    Args:
      flag: the --checkpoint value, or None.
      config: the --config config, or None.

    Returns:
      The checkpoint, or None where neither names one (`NO_CHECKPOINT` says what to do).
    """
    return flag or (config.checkpoint or config.get("release") if config is not None else None)


def resolve(checkpoint: str, config=None) -> tuple[str, evaluation.Protocol]:
    """A checkpoint's converted directory and the protocol to test it with.

    Without a config, a release is tested with its configs/ file's frames and views, any other checkpoint with
    `evaluation.Protocol.default` for its variant; a config sets the protocol itself (completed for the model).

    Args:
      checkpoint: a release name, converted directory or .pth file (fetched and converted once, then cached).
      config: a config from configs/, or None.

    Returns:
      The directory and the protocol.

    Raises:
      CheckpointError: a checkpoint that cannot be read; ValueError (ConfigError): a config that does not fit.
    """
    directory = hub.resolve(checkpoint)
    metadata = read_metadata(directory)
    protocol = evaluation.Protocol.default(metadata["variant"], metadata.get("multi_label", False))
    if config is None:
        if checkpoint in releases.BY_NAME:  # the release's own frames and views
            protocol = release_protocol(protocol, checkpoint)
        return str(directory), protocol
    recipes.complete(config, metadata["variant"], metadata["num_classes"], protocol.multi_label)
    protocol = evaluation.Protocol.from_config(config)
    evaluation.check_model(config, metadata, checkpoint)
    return str(directory), protocol


def resized_frames(path: str, short_side: int) -> np.ndarray:
    """Every frame of a video file, decoded with PyAV and resized to the short side as it is decoded (bilinear, as
    the test protocol), so the whole video is held at that size only.

    Args:
      path: a video file.
      short_side: the frames' shorter side.

    Returns:
      (N, H, W, 3) uint8.

    Raises:
      VideoError: an unreadable, truncated or empty file.
    """
    resized, chunk = [], []
    for frame in video.iter_frames(path):
        chunk.append(frame.image)
        if len(chunk) == pipelines.RESIZE_CHUNK:
            resized.append(pipelines.resize_short_side(np.stack(chunk), short_side).numpy())
            chunk = []
    if chunk:
        resized.append(pipelines.resize_short_side(np.stack(chunk), short_side).numpy())
    return np.concatenate(resized)


def views_of(frames: np.ndarray, path: str, sampling: pipelines.Sampling, views: pipelines.TestViews) -> np.ndarray:
    """The test views of `resized_frames`' result, sampled and cropped as `pipelines.test_views` does.

    Args:
      frames: the video's frames at the views' short side.
      path: the video file, for the error message.
      sampling: how frames are picked.
      views: clips, crops and crop size.

    Returns:
      (clips * crops, T, S, S, 3) uint8.

    Raises:
      VideoError: a video too short for one clip.
    """
    if len(frames) < sampling.num_frames:
        raise video.VideoError(f"{path}: {len(frames)} frames, too short for clips of {sampling.num_frames} frames")
    unique, positions = np.unique(pipelines.test_indices(len(frames), sampling, views).numpy().reshape(-1),
                                  return_inverse=True)
    return pipelines.crop_views(frames[unique], positions, sampling, views).numpy()


def load_views(path: str, sampling: pipelines.Sampling, views: pipelines.TestViews) -> np.ndarray:
    """The test views of a video file: `views_of` its `resized_frames`.

    Args:
      path: a video file.
      sampling: how frames are picked.
      views: clips, crops, short side and crop size.

    Returns:
      (clips * crops, T, S, S, 3) uint8.

    Raises:
      VideoError: an unreadable, truncated, empty or too-short file.
    """
    return views_of(resized_frames(path, views.short_side), path, sampling, views)


def class_names(checkpoint: str, labels_file: str | None, num_classes: int) -> list[str]:
    """The names of the model's classes.

    Args:
      checkpoint: a converted directory.
      labels_file: a class list naming the head rows, or None for the checkpoint's own.
      num_classes: the model's class count.

    Returns:
      The names, or "0".."K-1" where neither names them.

    Raises:
      ValueError: a list of another length.
    """
    names = class_lists.read_class_names(labels_file) if labels_file else read_metadata(checkpoint).get("class_names")
    if names is None:
        return [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{labels_file or checkpoint} names {len(names)} classes, the model has {num_classes}")
    return names


def release_protocol(default: evaluation.Protocol, name: str) -> evaluation.Protocol:
    """The protocol of a release's configs/ file (its frames, sampling and views), aggregated as `default`.

    Args:
      default: `evaluation.Protocol.default` for the release's variant.
      name: a release name.

    Returns:
      The protocol.
    """
    f = recipes.release_protocol(name)
    return dataclasses.replace(
        default, sampling=pipelines.Sampling(f["data.num_frames"], f["data.rate"], f["data.mode"]),
        views=pipelines.TestViews(f["data.clips"], f["data.crops"], f["data.short_side"], f["data.crop_size"]))


def centre_views(protocol: evaluation.Protocol) -> pipelines.TestViews:
    """The view a heatmap shows: the protocol's one centre clip, centre crop.

    Args:
      protocol: the test protocol.

    Returns:
      Its views with one clip and one crop.
    """
    return dataclasses.replace(protocol.views, clips=1, crops=1)


def centre_clip(path: str, protocol: evaluation.Protocol) -> np.ndarray:
    """The clip the model sees of a video: the protocol's sampling, `centre_views`.

    Args:
      path: the video file.
      protocol: the test protocol.

    Returns:
      (T, S, S, 3) uint8.

    Raises:
      VideoError: an unreadable or too-short video.
    """
    return load_views(path, protocol.sampling, centre_views(protocol))[0]
