"""Training augmentation against PIL, the library whose ops the original RandAugment (timm, SlowFast) calls."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from uniformer_jax.data import augment, image_ops

FILL = (128, 128, 128)


def frames(t=3, h=40, w=56, seed=0) -> np.ndarray:
    """Smooth gradients plus noise: a different picture per frame, every level range covered."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    out = []
    for k in range(t):
        base = np.stack([x * 255 / w, y * 200 / h + 20 * k, (x + y) * 100 / (h + w) + 60], -1)
        out.append(np.clip(base + rng.normal(0, 6, base.shape), 0, 255))
    return np.round(np.stack(out)).astype(np.uint8)


def per_frame(video, fn):
    return np.stack([np.asarray(fn(Image.fromarray(f))) for f in video])


def solarize_add_lut(add, thresh=128):  # timm's solarize_add, a PIL point table
    return [min(255, i + add) if i < thresh else i for i in range(256)]


EXACT = [
    ("autocontrast", image_ops.autocontrast, ImageOps.autocontrast),
    ("equalize", image_ops.equalize, ImageOps.equalize),
    ("invert", image_ops.invert, ImageOps.invert),
    *[(f"posterize{b}", lambda x, b=b: image_ops.posterize(x, b), lambda im, b=b: ImageOps.posterize(im, b))
      for b in range(5)],
    *[(f"solarize{t}", lambda x, t=t: image_ops.solarize(x, t), lambda im, t=t: ImageOps.solarize(im, t))
      for t in (0, 77, 128, 256)],
    *[(f"solarize_add{a}", lambda x, a=a: image_ops.solarize_add(x, a),
       lambda im, a=a: im.point(solarize_add_lut(a) * 3)) for a in (0, 40, 110)],
]


@pytest.mark.parametrize("name, ours, pil", EXACT, ids=[e[0] for e in EXACT])
def test_pixel_ops_equal_pil(name, ours, pil):
    video = frames()
    np.testing.assert_array_equal(ours(tf.constant(video)).numpy(), per_frame(video, pil))


def test_autocontrast_and_equalize_handle_flat_channels():
    video = np.full((2, 8, 8, 3), 77, np.uint8)
    video[1, :, :, 0] = np.arange(64).reshape(8, 8)
    for ours, pil in ((image_ops.autocontrast, ImageOps.autocontrast), (image_ops.equalize, ImageOps.equalize)):
        np.testing.assert_array_equal(ours(tf.constant(video)).numpy(), per_frame(video, pil))


ENHANCE = [("color", image_ops.color, ImageEnhance.Color), ("contrast", image_ops.contrast, ImageEnhance.Contrast),
           ("brightness", image_ops.brightness, ImageEnhance.Brightness),
           ("sharpness", image_ops.sharpness, ImageEnhance.Sharpness)]


@pytest.mark.parametrize("factor", [0.1, 0.55, 1.0, 1.37, 1.9])
@pytest.mark.parametrize("name, ours, pil", ENHANCE, ids=[e[0] for e in ENHANCE])
def test_enhance_ops_match_pil_within_one_level(name, ours, pil, factor):
    video = frames()
    got = ours(tf.constant(video), factor).numpy().astype(int)
    want = per_frame(video, lambda im: pil(im).enhance(factor)).astype(int)
    assert np.abs(got - want).max() <= 1


GEOMETRIC = [
    ("rotate", lambda x, m: image_ops.rotate(x, m * 30),
     lambda im, m: im.rotate(m * 30, resample=Image.BILINEAR, fillcolor=FILL)),
    ("shear_x", lambda x, m: image_ops.shear_x(x, m * 0.3),
     lambda im, m: im.transform(im.size, Image.AFFINE, (1, m * 0.3, 0, 0, 1, 0), Image.BILINEAR, fillcolor=FILL)),
    ("shear_y", lambda x, m: image_ops.shear_y(x, m * 0.3),
     lambda im, m: im.transform(im.size, Image.AFFINE, (1, 0, 0, m * 0.3, 1, 0), Image.BILINEAR, fillcolor=FILL)),
    ("translate_x", lambda x, m: image_ops.translate_x(x, m * 0.45),
     lambda im, m: im.transform(im.size, Image.AFFINE, (1, 0, m * 0.45 * im.size[0], 0, 1, 0), Image.BILINEAR,
                                fillcolor=FILL)),
    ("translate_y", lambda x, m: image_ops.translate_y(x, m * 0.45),
     lambda im, m: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, m * 0.45 * im.size[1]), Image.BILINEAR,
                                fillcolor=FILL)),
]


@pytest.mark.parametrize("level", [-0.7, 0.33, 1.0])
@pytest.mark.parametrize("name, ours, pil", GEOMETRIC, ids=[g[0] for g in GEOMETRIC])
def test_geometric_ops_match_pil_bilinear(name, ours, pil, level):
    video = frames()
    got = ours(tf.constant(video), level).numpy().astype(int)
    want = per_frame(video, lambda im: pil(im, level)).astype(int)
    diff = np.abs(got - want)
    # Pixels at the edge of the filled area mix image and fill differently; everywhere else they agree.
    assert np.mean(diff <= 2) > 0.95 and np.median(diff) == 0


def test_randaugment_applies_the_same_ops_to_every_frame_and_follows_the_seed():
    still = np.repeat(frames(t=1), 4, axis=0)
    outputs = [augment.randaugment(tf.constant(still), tf.constant([s, 0], tf.int64)).numpy() for s in range(12)]
    for out in outputs:
        assert out.shape == still.shape and out.dtype == np.uint8
        assert all((out[k] == out[0]).all() for k in range(4))
    again = augment.randaugment(tf.constant(still), tf.constant([5, 0], tf.int64)).numpy()
    np.testing.assert_array_equal(again, outputs[5])
    assert sum(not (out == still).all() for out in outputs) >= 9  # 4 ops at p 0.5: unchanged with p 1/16


# SlowFast's rand_augment.py (timm's): _RAND_TRANSFORMS, and _RAND_INCREASING_TRANSFORMS for `inc1` policies.
TIMM_OPS = ["AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]
TIMM_INCREASING = [n + "Increasing" if n in ("Posterize", "Solarize", "Color", "Contrast", "Brightness", "Sharpness")
                   else n for n in TIMM_OPS]


def test_randaugment_policies_read_as_timm_reads_them():
    assert [name for name, _ in augment.PLAIN_OPS] == TIMM_OPS
    assert [name for name, _ in augment.INCREASING_OPS] == TIMM_INCREASING
    # (ops, magnitude, std, increasing); timm's defaults: 2 ops at magnitude 10, no noise, plain ops.
    assert augment.parse_policy("rand-m7-n4-mstd0.5-inc1") == (4, 7.0, 0.5, True)
    assert augment.parse_policy("rand-m5-n2-mstd0.25") == (2, 5.0, 0.25, False)
    assert augment.parse_policy("rand") == (2, 10.0, 0.0, False)
    for bad in ("rand-m7-x3", "augmix-m5", ""):
        with pytest.raises(ValueError, match="timm's"):
            augment.parse_policy(bad)


def test_plain_ops_grow_milder_with_the_level():
    """Without `inc1`, level 10 posterizes to 4 bits and solarizes nothing (timm: int(level / 10 * 4) bits,
    threshold int(level / 10 * 256)); level 0 keeps 0 bits and solarizes every pixel."""
    x = tf.constant(frames(t=1))
    ops = dict(augment.PLAIN_OPS)
    np.testing.assert_array_equal(ops["Posterize"](x, 10.0, 1.0), image_ops.posterize(x, 4))
    np.testing.assert_array_equal(ops["Solarize"](x, 10.0, 1.0), x)
    np.testing.assert_array_equal(ops["Solarize"](x, 0.0, 1.0), 255 - frames(t=1))
    # The enhancements take (level / 10) * 1.8 + 0.1 whatever the sign: at level 5, factor 1.0 leaves the clip.
    for name in ("Color", "Contrast", "Brightness", "Sharpness"):
        assert np.abs(ops[name](x, 5.0, -1.0).numpy().astype(int) - frames(t=1)).max() <= 1, name


def test_random_erasing_puts_one_noise_box_on_all_frames():
    video = np.zeros((4, 60, 80, 3), np.uint8)
    sizes = []
    for s in range(10):
        out = augment.random_erasing(tf.constant(video), tf.constant([s, 1], tf.int64)).numpy()
        changed = (out != 0).any(axis=-1)
        assert (changed == changed[0]).mean() > 0.99  # the same box (noise can hit 0 on single pixels)
        rows, cols = np.nonzero(changed[0])
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        sizes.append(box / (60 * 80))
        inside = out[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1].astype(float)
        assert abs(inside.mean() - 0.45 * 255) < 10 and (out[0] != out[1]).any()  # N(mean, std), new per frame
    assert min(sizes) >= 0.015 and max(sizes) <= 0.36


@pytest.mark.parametrize("seed", range(5))
def test_random_resized_crop_keeps_area_and_aspect_in_range(seed):
    height, width = 90, 120
    ramp_x = np.broadcast_to(np.arange(width)[None, :, None], (height, width, 1))
    ramp_y = np.broadcast_to(np.arange(height)[:, None, None], (height, width, 1))
    video = np.concatenate([ramp_x, ramp_y, np.zeros_like(ramp_x)], -1)[None].astype(np.uint8)
    out = augment.random_resized_crop(tf.constant(video), 32, (0.08, 1.0), (3 / 4, 4 / 3),
                                      tf.constant([seed, 2], tf.int64)).numpy().astype(float)
    w = out[0, :, -1, 0].mean() - out[0, :, 0, 0].mean()
    h = out[0, -1, :, 1].mean() - out[0, 0, :, 1].mean()
    w, h = w * 32 / 31, h * 32 / 31  # centre-to-centre span of 32 samples covers 31/32 of the box
    assert 0.07 <= w * h / (height * width) <= 1.01
    assert 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1
