"""Training augmentation of uint8 clips (T, H, W, 3) in TensorFlow, as the original recipe (Sense-X
`slowfast/datasets/kinetics.py`).

RandAugment follows timm's policies as SlowFast applies them (`rand-m7-n4-mstd0.5-inc1` for S/B, weaker ones for
the lightweight models): the same ops and magnitudes for every frame of a clip, each op (`image_ops`, as PIL)
applied with probability 0.5. Then random resized crops, flips and random erasing. All randomness is stateless,
drawn from the seed given.
"""

from __future__ import annotations

import functools
import math
import re

import tensorflow as tf

from uniformer_jax.data.image_ops import (
    autocontrast,
    brightness,
    color,
    contrast,
    equalize,
    invert,
    posterize,
    rotate,
    sharpness,
    shear_x,
    shear_y,
    solarize,
    solarize_add,
    translate_x,
    translate_y,
)
from uniformer_jax.models.layers import MEAN, STD

MAX_LEVEL = 10.0


def _enhance_factor(level, sign):
    return 1.0 + sign * level / MAX_LEVEL * 0.9


# timm's _RAND_INCREASING_TRANSFORMS (policies with `inc1`), each as (frames, level in [0, 10], random sign) -> frames.
INCREASING_OPS = (
    ("AutoContrast", lambda x, level, sign: autocontrast(x)),
    ("Equalize", lambda x, level, sign: equalize(x)),
    ("Invert", lambda x, level, sign: invert(x)),
    ("Rotate", lambda x, level, sign: rotate(x, sign * level / MAX_LEVEL * 30.0)),
    ("PosterizeIncreasing", lambda x, level, sign: posterize(x, 4 - tf.cast(level / MAX_LEVEL * 4, tf.int32))),
    ("SolarizeIncreasing", lambda x, level, sign: solarize(x, 256 - tf.cast(level / MAX_LEVEL * 256, tf.int32))),
    ("SolarizeAdd", lambda x, level, sign: solarize_add(x, tf.cast(level / MAX_LEVEL * 110, tf.int32))),
    ("ColorIncreasing", lambda x, level, sign: color(x, _enhance_factor(level, sign))),
    ("ContrastIncreasing", lambda x, level, sign: contrast(x, _enhance_factor(level, sign))),
    ("BrightnessIncreasing", lambda x, level, sign: brightness(x, _enhance_factor(level, sign))),
    ("SharpnessIncreasing", lambda x, level, sign: sharpness(x, _enhance_factor(level, sign))),
    ("ShearX", lambda x, level, sign: shear_x(x, sign * level / MAX_LEVEL * 0.3)),
    ("ShearY", lambda x, level, sign: shear_y(x, sign * level / MAX_LEVEL * 0.3)),
    ("TranslateXRel", lambda x, level, sign: translate_x(x, sign * level / MAX_LEVEL * 0.45)),
    ("TranslateYRel", lambda x, level, sign: translate_y(x, sign * level / MAX_LEVEL * 0.45)),
)
# timm's _RAND_TRANSFORMS (policies without `inc1`): posterize, solarize and the enhancements grow milder with the
# level, and the enhancement factor is (level / 10) * 1.8 + 0.1 whatever the sign.
PLAIN_OPS = INCREASING_OPS[:4] + (
    ("Posterize", lambda x, level, sign: posterize(x, tf.cast(level / MAX_LEVEL * 4, tf.int32))),
    ("Solarize", lambda x, level, sign: solarize(x, tf.cast(level / MAX_LEVEL * 256, tf.int32))),
    INCREASING_OPS[6],
    ("Color", lambda x, level, sign: color(x, level / MAX_LEVEL * 1.8 + 0.1)),
    ("Contrast", lambda x, level, sign: contrast(x, level / MAX_LEVEL * 1.8 + 0.1)),
    ("Brightness", lambda x, level, sign: brightness(x, level / MAX_LEVEL * 1.8 + 0.1)),
    ("Sharpness", lambda x, level, sign: sharpness(x, level / MAX_LEVEL * 1.8 + 0.1)),
) + INCREASING_OPS[11:]


def parse_policy(policy: str) -> tuple[int, float, float, bool]:
    """timm's RandAugment notation, e.g. `rand-m7-n4-mstd0.5-inc1`.

    Unset parts take timm's defaults: 2 ops, magnitude 10, std 0, `inc0`.

    Args:
      policy: the policy string, as the original's `AUG.AA_TYPE`.

    Returns:
      (ops per clip, magnitude, magnitude std, increasing ops).

    Raises:
      ValueError: a string that is not a `rand-...` policy.
    """
    parts = policy.split("-")
    settings = {"n": 2.0, "m": MAX_LEVEL, "mstd": 0.0, "inc": 0.0}
    for part in parts[1:]:
        found = re.fullmatch(r"(mstd|m|n|inc)(\d+(?:\.\d+)?)", part)
        if not found:
            break
        settings[found.group(1)] = float(found.group(2))
    else:
        if parts[0] == "rand":
            return int(settings["n"]), settings["m"], settings["mstd"], bool(settings["inc"])
    raise ValueError(f"RandAugment policy {policy!r} is not timm's `rand-m<magnitude>-n<ops>-mstd<std>-inc<0|1>`")


def randaugment(frames, seed, layers: int = 4, magnitude: float = 7.0, std: float = 0.5, increasing: bool = True):
    """`layers` ops drawn with replacement, each applied with probability 0.5 at a level ~ N(magnitude, std).

    The same ops and levels apply to every frame of the clip.

    Args:
      frames: uint8 clip (T, H, W, 3).
      seed: a stateless seed, shape (2,).
      layers: ops per clip.
      magnitude: the mean level, 0-10.
      std: the level's standard deviation.
      increasing: timm's `inc1` ops (stronger with the level) rather than the plain ones.

    Returns:
      The clip, uint8, same shape.
    """
    ops = INCREASING_OPS if increasing else PLAIN_OPS
    seeds = tf.random.experimental.stateless_split(seed, layers)
    for k in range(layers):
        parts = tf.random.experimental.stateless_split(seeds[k], 3)
        draws = tf.random.stateless_uniform((2,), parts[0])
        op = tf.random.stateless_uniform((), parts[1], maxval=len(ops), dtype=tf.int32)
        level = tf.clip_by_value(magnitude + std * tf.random.stateless_normal((), parts[2]), 0.0, MAX_LEVEL)
        sign = tf.where(draws[1] < 0.5, -1.0, 1.0)
        # Bound now: tf.cond and tf.switch_case trace the branches in this iteration.
        branches = [functools.partial(fn, frames, level, sign) for _, fn in ops]
        frames = tf.cond(draws[0] < 0.5,
                         lambda op=op, branches=branches: tf.switch_case(op, branches), lambda frames=frames: frames)
        frames = tf.ensure_shape(frames, [None, None, None, 3])
    return frames


def resize(frames, size):
    """Bilinear resize (half-pixel centres) of uint8 frames, rounded to uint8.

    Args:
      frames: uint8 frames (T, H, W, 3).
      size: (height, width).

    Returns:
      The resized frames, uint8.
    """
    # Bilinear weights are convex, so values stay in [0, 255]: rounding is enough.
    return tf.cast(tf.round(tf.image.resize(frames, size, method="bilinear")), tf.uint8)


def random_resized_crop(frames, size: int, scale, ratio, seed):
    """A random box of `scale` of the area and `ratio` aspect (10 tries, else the whole frame), resized.

    Args:
      frames: uint8 clip (T, H, W, 3); every frame gets the same box.
      size: the output's height and width.
      scale: the box's area range as fractions of the frame's.
      ratio: the box's aspect ratio range.
      seed: a stateless seed, shape (2,).

    Returns:
      The clip (T, size, size, 3), uint8.
    """
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(frames)[1:4], tf.zeros([1, 0, 4]), seed, min_object_covered=0.0,
        aspect_ratio_range=ratio, area_range=scale, max_attempts=10, use_image_if_no_bounding_boxes=True)
    return resize(tf.slice(frames, tf.concat([[0], begin], 0), tf.concat([[-1], extent], 0)), [size, size])


ERASING_LOG_RATIO = (math.log(0.3), math.log(1 / 0.3))  # timm's aspect ratios 0.3 to 1/0.3


def random_erasing(frames, seed, area=(0.02, 1 / 3), log_ratio=ERASING_LOG_RATIO, tries: int = 10):
    """timm's RandomErasing, mode 'pixel', one box shared by all frames, filled with per-pixel noise.

    Args:
      frames: uint8 clip (T, H, W, 3); the noise is N(0, 1) in normalised units (`models.layers.normalise`),
        rounded to uint8.
      seed: a stateless seed, shape (2,).
      area: the box's area range as fractions of the frame's.
      log_ratio: the range of the box's log aspect ratio.
      tries: boxes tried until one fits.

    Returns:
      The uint8 clip with the box erased (unchanged when no box fits).
    """
    seeds = tf.random.experimental.stateless_split(seed, 5)
    shape = tf.shape(frames)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    target = tf.random.stateless_uniform((tries,), seeds[0], *area) * height * width
    aspect = tf.exp(tf.random.stateless_uniform((tries,), seeds[1], *log_ratio))
    h, w = tf.round(tf.sqrt(target * aspect)), tf.round(tf.sqrt(target / aspect))
    fits = (h < height) & (w < width)
    first = tf.argmax(tf.cast(fits, tf.int32))
    h, w = tf.cast(h[first], tf.int32), tf.cast(w[first], tf.int32)
    h, w = h * tf.cast(tf.reduce_any(fits), tf.int32), w * tf.cast(tf.reduce_any(fits), tf.int32)  # no fit: no box
    top = tf.cast(tf.random.stateless_uniform((), seeds[2]) * tf.cast(shape[1] - h + 1, tf.float32), tf.int32)
    left = tf.cast(tf.random.stateless_uniform((), seeds[3]) * tf.cast(shape[2] - w + 1, tf.float32), tf.int32)
    noise = MEAN + STD * tf.random.stateless_normal([shape[0], h, w, 3], seeds[4])  # N(0, 1) normalised
    noise = tf.cast(tf.clip_by_value(tf.round(noise), 0, 255), tf.uint8)
    padding = [[0, 0], [top, shape[1] - top - h], [left, shape[2] - left - w], [0, 0]]
    rows, cols = tf.range(shape[1]), tf.range(shape[2])
    box = ((rows >= top) & (rows < top + h))[:, None] & ((cols >= left) & (cols < left + w))[None, :]
    return tf.where(box[None, :, :, None], tf.pad(noise, padding), frames)


def train_augment(frames, aug, seed):
    """RandAugment, random resized crop, horizontal flip, random erasing, each as configured in `aug`.

    Args:
      frames: uint8 clip (T, H, W, 3).
      aug: a `pipelines.TrainAugment`.
      seed: a stateless seed, shape (2,).

    Returns:
      The augmented clip (T, S, S, 3), uint8.
    """
    seeds = tf.random.experimental.stateless_split(seed, 5)
    if aug.randaugment:
        frames = randaugment(frames, seeds[0], *parse_policy(aug.randaugment_policy))
    frames = random_resized_crop(frames, aug.crop_size, aug.crop_scale, aug.crop_ratio, seeds[1])
    if aug.flip:
        flip = tf.random.stateless_uniform((), seeds[2]) < 0.5
        frames = tf.cond(flip, lambda: tf.reverse(frames, [2]), lambda: frames)
    if aug.erasing > 0:
        erase = tf.random.stateless_uniform((), seeds[3]) < aug.erasing
        frames = tf.cond(erase, lambda: random_erasing(frames, seeds[4]), lambda: frames)
    return frames
