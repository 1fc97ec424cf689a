"""PIL's image operations, the ones timm's RandAugment applies, in TensorFlow on uint8 clips (T, H, W, 3).

Each op treats every frame as PIL treats an image (the same rounding and clipping; checked against PIL in the
tests), so that a clip's frames get what the original's per-frame PIL calls give them. Geometric ops interpolate
bilinearly where the original used bicubic.
"""

from __future__ import annotations

import math

import tensorflow as tf

FILL = 128  # timm's default fill colour for geometric ops


def _blend(degenerate, frames, factor):
    """PIL's Image.blend(degenerate, image, factor): truncated and clipped to uint8."""
    degenerate = tf.cast(degenerate, tf.float32)
    out = degenerate + factor * (tf.cast(frames, tf.float32) - degenerate)
    return tf.cast(tf.clip_by_value(out, 0.0, 255.0), tf.uint8)


def grayscale(frames):
    """PIL's convert('L') (ITU-R 601-2 luma, fixed point).

    Args:
      frames: uint8 clip (T, H, W, 3).

    Returns:
      The luma, (T, H, W, 1) int32.
    """
    x = tf.cast(frames, tf.int32)
    return (x[..., 0:1] * 19595 + x[..., 1:2] * 38470 + x[..., 2:3] * 7471 + 0x8000) // 65536


def color(frames, factor):
    """PIL's ImageEnhance.Color: a blend with the clip's grayscale.

    Args:
      frames: uint8 clip (T, H, W, 3).
      factor: 0 is grey, 1 the clip itself.

    Returns:
      The clip, uint8, same shape.
    """
    return _blend(tf.broadcast_to(grayscale(frames), tf.shape(frames)), frames, factor)


def contrast(frames, factor):
    """PIL's ImageEnhance.Contrast: a blend with each frame's mean luma.

    Args:
      frames: uint8 clip (T, H, W, 3).
      factor: 0 is flat grey, 1 the clip itself.

    Returns:
      The clip, uint8, same shape.
    """
    means = tf.reduce_mean(tf.cast(grayscale(frames), tf.float32), axis=(1, 2, 3), keepdims=True)
    return _blend(tf.broadcast_to(tf.floor(means + 0.5), tf.shape(frames)), frames, factor)


def brightness(frames, factor):
    """PIL's ImageEnhance.Brightness: a blend with black.

    Args:
      frames: uint8 clip (T, H, W, 3).
      factor: 0 is black, 1 the clip itself.

    Returns:
      The clip, uint8, same shape.
    """
    return _blend(tf.zeros_like(frames), frames, factor)


def sharpness(frames, factor):
    """PIL's ImageEnhance.Sharpness: a blend with the SMOOTH filter (3x3, centre 5, sum 13); border pixels stay.

    Args:
      frames: uint8 clip (T, H, W, 3).
      factor: 0 is smoothed, 1 the clip itself.

    Returns:
      The clip, uint8, same shape.
    """
    x = tf.cast(frames, tf.float32)
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.round(tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID"))
    smooth = tf.pad(smooth, [[0, 0], [1, 1], [1, 1], [0, 0]])
    shape = tf.shape(x)
    inner = tf.pad(tf.ones([shape[1] - 2, shape[2] - 2], tf.bool), [[1, 1], [1, 1]])[None, :, :, None]
    return _blend(tf.where(inner, smooth, x), frames, factor)


def _channel_luts(frames, make_lut):
    """Applies a 256-entry lookup table made per frame and channel from that channel's histogram."""
    groups = tf.shape(frames)[0] * 3
    offsets = tf.reshape(tf.range(groups) * 256, [-1, 1, 1, 3])  # a bin range per (frame, channel)
    bins = tf.cast(frames, tf.int32) + offsets
    hist = tf.reshape(tf.math.bincount(tf.reshape(bins, [-1]), minlength=groups * 256, maxlength=groups * 256),
                      [groups, 256])
    return tf.cast(tf.gather(tf.reshape(make_lut(hist), [-1]), bins), tf.uint8)


def _equalize_lut(hist):
    """PIL ImageOps.equalize: step = (count - count of the last used level) // 255."""
    levels = tf.range(256)
    last = tf.reduce_max(tf.where(hist > 0, levels[None], -1), axis=1, keepdims=True)
    last_count = tf.reduce_sum(tf.where(levels[None] == last, hist, 0), axis=1, keepdims=True)
    step = (tf.reduce_sum(hist, axis=1, keepdims=True) - last_count) // 255
    before = tf.cumsum(hist, axis=1, exclusive=True)
    lut = tf.minimum((step // 2 + before) // tf.maximum(step, 1), 255)
    return tf.where(step > 0, lut, levels[None])


def _autocontrast_lut(hist):
    """PIL ImageOps.autocontrast (no cutoff): stretch [lowest, highest used level] to [0, 255]."""
    levels = tf.range(256)
    lo = tf.reduce_min(tf.where(hist > 0, levels[None], 256), axis=1, keepdims=True)
    hi = tf.reduce_max(tf.where(hist > 0, levels[None], -1), axis=1, keepdims=True)
    scale = 255.0 / tf.cast(tf.maximum(hi - lo, 1), tf.float64)  # float64, as PIL's Python arithmetic
    lut = tf.cast(levels[None], tf.float64) * scale - tf.cast(lo, tf.float64) * scale
    lut = tf.clip_by_value(tf.cast(lut, tf.int32), 0, 255)  # int() truncates toward zero, as PIL
    return tf.where(hi > lo, lut, levels[None])


def equalize(frames):
    """PIL's ImageOps.equalize, per frame and channel.

    Args:
      frames: uint8 clip (T, H, W, 3).

    Returns:
      The clip, uint8, same shape.
    """
    return _channel_luts(frames, _equalize_lut)


def autocontrast(frames):
    """PIL's ImageOps.autocontrast (no cutoff), per frame and channel.

    Args:
      frames: uint8 clip (T, H, W, 3).

    Returns:
      The clip, uint8, same shape.
    """
    return _channel_luts(frames, _autocontrast_lut)


def invert(frames):
    """PIL's ImageOps.invert.

    Args:
      frames: uint8 clip (T, H, W, 3).

    Returns:
      The clip, uint8, same shape.
    """
    return 255 - frames


def posterize(frames, bits):
    """PIL's ImageOps.posterize: keep the top bits of each value.

    Args:
      frames: uint8 clip (T, H, W, 3).
      bits: bits kept, 0-8.

    Returns:
      The clip, uint8, same shape.
    """
    mask = tf.cast(255 - (2 ** (8 - bits) - 1), tf.uint8)
    return tf.bitwise.bitwise_and(frames, mask)


def solarize(frames, threshold):
    """PIL's ImageOps.solarize: invert the values at or above a threshold.

    Args:
      frames: uint8 clip (T, H, W, 3).
      threshold: 0-256.

    Returns:
      The clip, uint8, same shape.
    """
    return tf.where(tf.cast(frames, tf.int32) >= threshold, 255 - frames, frames)


def solarize_add(frames, add, threshold=128):
    """timm's solarize_add: add to the values below a threshold, clipped at 255.

    Args:
      frames: uint8 clip (T, H, W, 3).
      add: what is added, 0-255.
      threshold: values below it get `add`.

    Returns:
      The clip, uint8, same shape.
    """
    x = tf.cast(frames, tf.int32)
    return tf.cast(tf.where(x < threshold, tf.minimum(x + add, 255), x), tf.uint8)


def affine(frames, matrix):
    """PIL's Image.transform(AFFINE, matrix), bilinear: output pixel (x, y) samples the input at matrix @ (x, y, 1).

    PIL works on pixel centres (+0.5), here pixel indices; the matrix is shifted accordingly. Samples outside the
    frame take the fill colour. All frames share the sampling grid, so each tap gathers all frames at once.

    Args:
      frames: uint8 clip (T, H, W, 3).
      matrix: the six coefficients (a, b, c, d, e, f) of PIL's inverse mapping.

    Returns:
      The clip, uint8, same shape.
    """
    a, b, c, d, e, f = (tf.cast(v, tf.float32) for v in matrix)
    shape = tf.shape(frames)
    length, height, width = shape[0], shape[1], shape[2]
    ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32) + 0.5, tf.range(width, dtype=tf.float32) + 0.5,
                         indexing="ij")
    sx, sy = a * xs + b * ys + c - 0.5, d * xs + e * ys + f - 0.5
    x0, y0 = tf.floor(sx), tf.floor(sy)
    wx, wy = tf.reshape(sx - x0, [-1, 1]), tf.reshape(sy - y0, [-1, 1])
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    pixels = tf.reshape(tf.transpose(frames, [1, 2, 0, 3]), [height * width, length * 3])
    pixels = tf.concat([pixels, tf.fill([1, length * 3], tf.constant(FILL, tf.uint8))], 0)

    def tap(y, x):
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        index = tf.where(inside, y * width + x, height * width)  # outside: the fill row
        return tf.cast(tf.gather(pixels, tf.reshape(index, [-1])), tf.float32)

    top = tap(y0, x0) * (1 - wx) + tap(y0, x0 + 1) * wx
    bottom = tap(y0 + 1, x0) * (1 - wx) + tap(y0 + 1, x0 + 1) * wx
    out = tf.cast(tf.clip_by_value(tf.round(top * (1 - wy) + bottom * wy), 0, 255), tf.uint8)
    return tf.transpose(tf.reshape(out, [height, width, length, 3]), [2, 0, 1, 3])


def rotate(frames, degrees):
    """PIL's Image.rotate(degrees): counter-clockwise about the image centre, same size.

    Args:
      frames: uint8 clip (T, H, W, 3).
      degrees: the angle.

    Returns:
      The clip, uint8, same shape.
    """
    shape = tf.cast(tf.shape(frames), tf.float32)
    cx, cy = shape[2] / 2.0, shape[1] / 2.0
    angle = -degrees * math.pi / 180.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    return affine(frames, [cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy])


def shear_x(frames, factor):
    """timm's shear_x: PIL's affine transform with a horizontal shear.

    Args:
      frames: uint8 clip (T, H, W, 3).
      factor: the shear, x += factor * y.

    Returns:
      The clip, uint8, same shape.
    """
    return affine(frames, [1.0, factor, 0.0, 0.0, 1.0, 0.0])


def shear_y(frames, factor):
    """timm's shear_y: PIL's affine transform with a vertical shear.

    Args:
      frames: uint8 clip (T, H, W, 3).
      factor: the shear, y += factor * x.

    Returns:
      The clip, uint8, same shape.
    """
    return affine(frames, [1.0, 0.0, 0.0, factor, 1.0, 0.0])


def translate_x(frames, fraction):
    """timm's translate_x_rel: a horizontal shift by a fraction of the width.

    Args:
      frames: uint8 clip (T, H, W, 3).
      fraction: the shift over the width.

    Returns:
      The clip, uint8, same shape.
    """
    return affine(frames, [1.0, 0.0, fraction * tf.cast(tf.shape(frames)[2], tf.float32), 0.0, 1.0, 0.0])


def translate_y(frames, fraction):
    """timm's translate_y_rel: a vertical shift by a fraction of the height.

    Args:
      frames: uint8 clip (T, H, W, 3).
      fraction: the shift over the height.

    Returns:
      The clip, uint8, same shape.
    """
    return affine(frames, [1.0, 0.0, 0.0, 0.0, 1.0, fraction * tf.cast(tf.shape(frames)[1], tf.float32)])
