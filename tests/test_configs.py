"""Every released model has a config, and each config says what Sense-X's README, configs and data loaders say of that
model."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from test_light import README as LIGHT

from uniformer_jax import evaluation, recipes
from uniformer_jax.weights import releases

ROOT = Path(__file__).resolve().parents[1]

# Sense-X `video_classification/README.md`: (dataset, variant, frames, stride) -> top-1 (K400-pretrained for SSv;
# K600-pretrained second)
RELEASED = {
    "k400_s8": ("k400", "s", 8, 8, 78.4), "k400_s16": ("k400", "s", 16, 4, 80.8),
    "k400_s16x8": ("k400", "s", 16, 8, 80.8), "k400_b8": ("k400", "b", 8, 8, 79.8),
    "k400_b16": ("k400", "b", 16, 4, 82.0), "k400_b16x8": ("k400", "b", 16, 8, 81.7),
    "k400_b32": ("k400", "b", 32, 4, 82.9),
    "k600_s16": ("k600", "s", 16, 4, 82.8), "k600_s16x8": ("k600", "s", 16, 8, 82.7),
    "k600_b16": ("k600", "b", 16, 4, 84.0), "k600_b16x8": ("k600", "b", 16, 8, 83.4),
    "k600_b32": ("k600", "b", 32, 4, 84.5),
    "sthv1_s16": ("sthv1", "s", 16, None, (57.2, 57.6)), "sthv1_s32": ("sthv1", "s", 32, None, (58.8, 59.9)),
    "sthv1_b16": ("sthv1", "b", 16, None, (59.1, 58.8)), "sthv1_b32": ("sthv1", "b", 32, None, (60.9, 61.0)),
    "sthv2_s16": ("sthv2", "s", 16, None, (67.7, 69.4)), "sthv2_s32": ("sthv2", "s", 32, None, (69.0, 70.4)),
    "sthv2_b16": ("sthv2", "b", 16, None, (70.4, 70.2)), "sthv2_b32": ("sthv2", "b", 32, None, (71.1, 71.2)),
}
PER_VIEW_GFLOPS = {("s", 8): 17.61, ("s", 16): 41.76, ("s", 32): 109.63,  # fvcore's `flop_count` of Sense-X's model
                   ("b", 8): 40.23, ("b", 16): 96.74, ("b", 32): 258.63}
CLASSES = {"k400": 400, "k600": 600, "sthv1": 174, "sthv2": 174}
# Sense-X `video_classification/exp/*/run.sh` and `config.yaml`: (videos per node, base lr per node, nodes, epochs,
# warmup epochs, drop path)
RECIPES = {
    "k400_s8": (128, 4e-4, 1, 100, 10, 0.1), "k400_s16": (32, 1e-4, 1, 110, 10, 0.1),
    "k400_s16x8": (32, 1e-4, 1, 110, 10, 0.1), "k400_b8": (64, 2e-4, 1, 100, 10, 0.3),
    "k400_b16": (40, 1.25e-4, 1, 110, 10, 0.3), "k400_b16x8": (40, 1.25e-4, 1, 110, 10, 0.3),
    "k400_b32": (32, 1e-4, 1, 110, 10, 0.3), "k600_s16": (96, 3e-4, 1, 110, 10, 0.1),
    "k600_s16x8": (32, 1e-4, 1, 110, 10, 0.1), "k600_b16": (40, 1.25e-4, 1, 110, 10, 0.3),
    "k600_b16x8": (32, 1.25e-4, 1, 110, 10, 0.3), "k600_b32": (32, 1e-4, 4, 110, 10, 0.3),
    "sthv1_s16": (32, 2e-4, 1, 60, 5, 0.2), "sthv1_s32": (32, 2e-4, 1, 60, 5, 0.2),
    "sthv2_s16": (32, 2e-4, 1, 50, 5, 0.3), "sthv2_s32": (32, 2e-4, 1, 50, 5, 0.3),
    "sthv1_b16": (40, 2.5e-4, 1, 60, 5, 0.6), "sthv1_b32": (32, 2e-4, 1, 60, 5, 0.6),
    "sthv2_b16": (40, 2.5e-4, 1, 50, 5, 0.4), "sthv2_b32": (32, 2e-4, 1, 50, 5, 0.5),
}
DEMO = {"motion", "finetune"}  # the demo's task (python -m uniformer_jax.demo) and fine-tuning on any dataset


def test_every_config_file_is_a_released_model():
    files = {p.stem for p in (ROOT / "configs").glob("*.py") if p.stem not in ("__init__", "common")} - DEMO
    v2 = {p.stem for p in (ROOT / "configs").glob("*_v2_*.py")}  # checked in test_releases_v2.py
    assert files - v2 == set(RELEASED) | set(LIGHT)  # the lightweight models' are checked in test_light.py


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_config_matches_the_spec(name):
    dataset, variant, frames, stride, top1 = RELEASED[name]
    config = importlib.import_module(f"configs.{name}").get_config()
    assert config.model.variant == {"s": "uniformer_small", "b": "uniformer_base"}[variant]
    assert config.model.num_classes == CLASSES[dataset]
    assert config.data.num_frames == frames and config.data.crop_size == 224 and config.data.short_side == 224
    if stride:  # Kinetics: dense sampling, 4 clips x 1 centre crop (§4.2, §5.1)
        assert (config.data.mode, config.data.rate, config.data.clips, config.data.crops) == ("dense", stride, 4, 1)
        assert config.paper.top1 == top1
    else:  # Something-Something: segment sampling, 1 clip x 3 crops, no flip (§5.2)
        assert (config.data.mode, config.data.clips, config.data.crops) == ("segment", 1, 3)
        assert (config.paper.top1, config.paper.top1_k600) == top1
    views = config.data.clips * config.data.crops
    assert config.paper.gflops == pytest.approx(PER_VIEW_GFLOPS[variant, frames] * views, rel=0.01)
    assert config.eval.aggregate == "sum_logits"  # the original's TestMeter (§5.3)
    evaluation.Protocol.from_config(config)  # a valid protocol
    videos, lr, nodes, epochs, warmup, drop_path = RECIPES[name]
    t = config.train
    assert t.batch_size == t.reference_batch == 2 * videos * nodes  # 2 clips a video (repeated augmentation)
    assert t.lr == pytest.approx(lr * nodes)  # BASE_LR_SCALE_NUM_SHARDS
    assert (t.epochs, t.warmup_epochs, t.drop_path) == (epochs, warmup, drop_path)
    assert (t.weight_decay, t.clip_norm, t.mixup, t.cutmix, t.label_smoothing) == (0.05, 20.0, 0.8, 1.0, 0.1)
    assert t.flip == bool(stride)  # no flips for Something-Something (§5.2)


@pytest.mark.parametrize("release", [r.name for r in releases.RELEASES_V1 if r.config])
def test_fine_tuning_from_a_release_takes_its_config_files_protocol(release):
    config = importlib.import_module("configs.finetune").get_config()
    config.train.init = release
    recipes.complete(config)
    own = importlib.import_module(f"configs.{releases.BY_NAME[release].config}").get_config()
    for field in recipes.PROTOCOL_FIELDS:
        section, key = field.split(".")
        assert config[section][key] == own[section][key], field


def test_fine_tuning_recipe_is_sensex_ucf101_hmdb51():
    config = importlib.import_module("configs.finetune").get_config()
    t = config.train
    # spec §6: S16x4 UCF101/HMDB51 from K400 S16x4: batch 128, lr 5e-5, 25 epochs, 5 warmup, drop path 0.2
    assert (t.init, t.batch_size, t.lr, t.epochs, t.warmup_epochs, t.drop_path) == ("k400_s16", 128, 5e-5, 25, 5, 0.2)
    assert t.randaugment_policy == "rand-m5-n2-mstd0.25" and t.freeze == "none"
    assert config.model.num_classes is None and config.data.name is None  # the dataset's
    config.train.init = "runs/some/model"  # a directory: its variant is known, the protocol is not
    with pytest.raises(ValueError, match="--config.data.num_frames=.* --config.data.rate="):
        recipes.complete(config, "uniformer_small")
