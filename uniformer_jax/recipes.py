"""What every UniFormer config shares; each file in configs/ names one released model and its dataset.

The released models and the paper's figures are in Sense-X's `video_classification/README.md`: Kinetics is tested with
4 clips x 1
centre crop, Something-Something with 1 clip x 3 crops, short side 224, crop 224. Override any field on the
command line, e.g. `--config.checkpoint=ckpt/b32 --config.data.source=/data/tfds/video_classification/k400/1.0.0`.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from uniformer_jax.models import uniformerv2
from uniformer_jax.models.variants import is_light, is_v2
from uniformer_jax.weights import releases

SHORT_NAMES = {"s": "uniformer_small", "b": "uniformer_base", "xxs": "uniformer_xxs", "xxs_ls": "uniformer_xxs_ls",
            "xs": "uniformer_xs"}
CLASSES = {"k400": 400, "k600": 600, "k700": 700, "k710": 710, "sthv1": 174, "sthv2": 174, "mit": 339, "anet": 200,
           "hacs": 200}


def base(dataset: str, variant: str, frames: int, release: str | None) -> ml_collections.ConfigDict:
    """The fields every config has, with the Kinetics test protocol (16 frames at rate 4, 4 clips x 1 crop).

    Args:
      dataset: the dataset_builder `--name` of its data.
      variant: a short name of `SHORT_NAMES`, or a variant.
      frames: frames a clip.
      release: the release whose protocol and recipe it is, or None.

    Returns:
      The config, without `train`.
    """
    config = ml_collections.ConfigDict()
    # A released model's name (`python -m uniformer_jax.zoo list`), a converted directory or a .pth file;
    # None: the config's own release.
    config.checkpoint = config_dict.placeholder(str)
    config.release = release  # the released weights this config's protocol and recipe belong to
    config.workdir = config_dict.placeholder(str)  # where results go; default: runs/<config name>
    config.model = ml_collections.ConfigDict(dict(
        variant=SHORT_NAMES.get(variant, variant), num_classes=CLASSES[dataset], dtype="float32",
        attention="xla"))
    config.data = ml_collections.ConfigDict(dict(
        name=dataset,  # the dataset_builder --name that data.source defaults to
        # A dataset directory or a DMVR TFRecord file pattern; None: the dataset `name` in the TFDS data
        # directory ($TFDS_DATA_DIR, else ~/tensorflow_datasets), where dataset_builder writes by default.
        source=config_dict.placeholder(str),
        split="validation", num_frames=frames, rate=4, mode="dense", clips=4, crops=1, short_side=224,
        crop_size=224, class_names=config_dict.placeholder(str),  # class list file for sources without names
        # Videos with several labels (dataset_builder lists `path,1;4`): one sigmoid a class, binary cross-entropy,
        # tested by mAP. eval.py and predict also take it from a checkpoint trained so.
        multi_label=False,
        # train.py: skip damaged training records (each logged with its file and byte offset) instead of stopping
        # at the first; the records are then read in Python, with both CRCs checked. eval.py always stops.
        skip_corrupt=False))
    config.eval = ml_collections.ConfigDict(dict(
        batch_size=8,  # videos per step over all devices; each video is clips x crops views
        aggregate="sum_logits"))  # the original's protocol; "mean_softmax" is MMAction2's
    config.paper = ml_collections.ConfigDict()
    return config


def recipe(videos: int, lr: float, epochs: int, warmup: int, drop_path: float, init: str, nodes: int = 1,
           flip: bool = True) -> ml_collections.ConfigDict:
    """The original's training run (Sense-X `video_classification/exp/*/run.sh`).

    Each video gives 2 clips (repeated augmentation), so the batch counts 2 x videos x nodes clips; the learning
    rate is for that batch and scales linearly when `batch_size` is changed.

    Args:
      videos: videos per node of 8 GPUs (`TRAIN.BATCH_SIZE`).
      lr: the base learning rate per node.
      epochs: training epochs.
      warmup: warmup epochs.
      drop_path: the stochastic depth rate.
      init: the release the paper started from.
      nodes: nodes the original trained on.
      flip: horizontal flips (not for Something-Something, where left and right matter).

    Returns:
      The `config.train` fields.
    """
    clips = 2 * videos * nodes
    return ml_collections.ConfigDict(dict(
        # What to start from: a release name (e.g. paper_init), a converted directory or a .pth file;
        # None: random weights.
        init=config_dict.placeholder(str),
        paper_init=init,  # the release the paper started from
        split="train", val_split="validation", seed=0,
        # What learns: none (all), backbone (a linear probe: the heads alone, features as in evaluation) or
        # stages:N (the first N of the 4 stages frozen, their BatchNorm statistics too).
        freeze="none",
        batch_size=clips, reference_batch=clips, lr=lr * nodes, epochs=epochs, warmup_epochs=warmup,
        warmup_lr=1e-6, end_lr=1e-6, weight_decay=0.05, clip_norm=20.0, drop_path=drop_path,
        mixup=0.8, cutmix=1.0, mix_switch=0.5, label_smoothing=0.1,
        mix_group=2 * videos // 8,  # clips mixed together: one GPU's batch in the original
        repeats=2, randaugment=True, erasing=0.25, flip=flip, crop_scale=(0.08, 1.0), crop_size=224,
        randaugment_policy="rand-m7-n4-mstd0.5-inc1",  # timm's notation, as the original's AUG.AA_TYPE
        shuffle_buffer=128,
        # The split is read as this many shards, each a stream of its own (a multiple of the process count).
        # Fixed, the batches do not depend on the number of processes; None: one shard per process.
        input_shards=config_dict.placeholder(int),
        # What fits on TPU pods (batch, remat, accumulate, fsdp per config and topology): BENCHMARKS.md's pod
        # table, from `python -m uniformer_jax.aot --search`.
        dtype="bfloat16",  # compute; parameters and optimiser state stay float32
        remat=(0, 0, 0, 0),  # leading blocks of each stage to recompute in the backward pass
        accumulate=1,  # micro-batches per optimiser step
        fsdp=1,  # devices that share each parameter (FSDP); the rest split the batch
        log_every=20, checkpoint_every=1000, keep=3,  # steps; the last `keep` checkpoints and the best stay
        val_every=5000, val_batch_size=8,  # validation: 1 clip x 1 centre crop per video
        # Check the run (config, data, init) and compile its step on the devices at hand, print its memory per
        # device against theirs, and exit: `python -m uniformer_jax.aot` compiles for a TPU pod from anywhere.
        dry_run=False))


def kinetics(dataset: str, variant: str, release: str | None, frames: int, rate: int, top1: float, gflops: float,
             train: ml_collections.ConfigDict):
    """A Kinetics model: dense sampling, 4 clips x 1 centre crop.

    Args:
      dataset: `k400` or `k600`.
      variant: a short name of `SHORT_NAMES` (`s`, `b`).
      release: the release whose protocol this is, or None.
      frames: frames a clip.
      rate: the sampling rate.
      top1: the paper's top-1.
      gflops: the paper's GFLOPs over all views (as Sense-X's README).
      train: the recipe (`recipe`).

    Returns:
      The config.
    """
    config = base(dataset, variant, frames, release)
    config.train = train
    config.data.rate = rate
    config.paper = ml_collections.ConfigDict(dict(top1=top1, gflops=gflops, views="1x4"))
    return config


def something(dataset: str, variant: str, release: str, frames: int, top1: float, top1_k600: float, gflops: float,
              train: ml_collections.ConfigDict):
    """A Something-Something model: TSN segment sampling, 1 clip x 3 crops.

    Released twice, fine-tuned from K400 (`top1`, the `release` named here) and from K600 (`top1_k600`, release
    `..._prek600`) weights; the architecture and protocol are the same.

    Args:
      dataset: `sthv1` or `sthv2`.
      variant: a short name of `SHORT_NAMES`.
      release: the K400-pretrained release.
      frames: frames (segments) a clip.
      top1: the K400-pretrained release's top-1.
      top1_k600: the K600-pretrained release's top-1.
      gflops: GFLOPs over all views.
      train: the recipe.

    Returns:
      The config.
    """
    config = base(dataset, variant, frames, release)
    config.train = train
    config.data.update(mode="segment", rate=1, clips=1, crops=3)
    config.paper = ml_collections.ConfigDict(dict(top1=top1, top1_k600=top1_k600, gflops=gflops, views="3x1"))
    return config


def kinetics_light(size: str, frames: int, crop: int, top1: float, gflops: float, layer_scale: bool = False):
    """A lightweight K400 model (Sense-X `exp_light/uniformer_{size}{frames}_{crop}_k400`).

    Sparse (segment) sampling, 1 clip x 1 centre crop at `crop` with the short side resized to it, and its recipe:
    float32 (no mixed precision), weaker RandAugment, fine-tuned from the ImageNet weights of its size and
    resolution.

    Args:
      size: `xxs` or `xs`.
      frames: frames a clip.
      crop: the crop (and short side).
      top1: the paper's top-1.
      gflops: GFLOPs of the one view.
      layer_scale: the `_ls` variant.

    Returns:
      The config.
    """
    release = f"k400_{size}{frames}_{crop}"
    config = base("k400", size + ("_ls" if layer_scale else ""), frames, release)
    config.data.update(mode="segment", rate=1, clips=1, crops=1, short_side=crop, crop_size=crop)
    config.paper = ml_collections.ConfigDict(dict(top1=top1, gflops=gflops, views="1x1"))
    xxs = size == "xxs"
    config.train = recipe(videos=256 if xxs else 128, lr=(4e-4 if frames <= 8 else 8e-4) if xxs else 4e-4,
                          epochs=110, warmup=10, drop_path=0.05 if xxs else 0.1,
                          init=f"in1k_{size}_{min(crop, 160) if xxs else 192}")
    config.train.update(
        weight_decay=0.1 if xxs else 0.05, dtype="float32", crop_size=crop,
        # The `_ls` configs name timm's bare "rand" policy: 2 ops at magnitude 10 without noise.
        randaugment_policy="rand-m10-n2-mstd0" if layer_scale else
        ("rand-m5-n2-mstd0.25" if xxs else "rand-m7-n4-mstd0.5-inc1"))
    return config


# The fields a fine-tuning config leaves to its starting release (`finetune`, `complete`).
PROTOCOL_FIELDS = ("model.variant", "data.num_frames", "data.rate", "data.mode", "data.clips", "data.crops",
                   "data.short_side", "data.crop_size", "train.crop_size", "train.dtype")


def release_protocol(name: str) -> dict[str, object]:
    """The model and test protocol of a release, as its configs/ file sets them (`PROTOCOL_FIELDS`).

    Kinetics: dense sampling at the release's rate, 4 clips x 1 crop at 224; Something-Something: 1 clip x 3
    crops of segments; the light models: 1 clip x 1 crop of segments at their resolution, in float32. The
    ImageNet weights have no video protocol: theirs is that of the Kinetics models the paper trained from them
    (16 frames; dense at rate 4 for S/B, segments at the weights' resolution for XXS/XS). UniFormerV2: segments,
    its published clips x crops at the model's input size.

    Args:
      name: a release name (`python -m uniformer_jax.zoo list`).

    Returns:
      Field path (`data.num_frames`) to value.

    Raises:
      KeyError: not a release.
    """
    release = releases.BY_NAME[name]
    frames = release.frames or 16
    light = is_light(release.variant)
    fields = {"model.variant": release.variant, "data.num_frames": frames, "data.short_side": 224,
              "data.crop_size": 224, "train.dtype": "float32" if light else "bfloat16"}
    if is_v2(release.variant):  # sparse sampling, its published views, at the model's input size
        size = uniformerv2.SPECS[release.variant].size
        fields.update({"data.mode": "segment", "data.rate": 1, "data.clips": release.views[0],
                       "data.crops": release.views[1], "data.short_side": size, "data.crop_size": size})
    elif light:
        size = int((release.config or release.name).rsplit("_", 1)[1])
        fields.update({"data.mode": "segment", "data.rate": 1, "data.clips": 1, "data.crops": 1,
                       "data.short_side": size, "data.crop_size": size})
    elif (release.config or "").startswith("sthv"):
        fields.update({"data.mode": "segment", "data.rate": 1, "data.clips": 1, "data.crops": 3})
    else:
        fields.update({"data.mode": "dense", "data.rate": release.rate or 4, "data.clips": 4, "data.crops": 1})
    fields["train.crop_size"] = fields["data.crop_size"]
    return fields


def complete(config, variant: str | None = None, num_classes: int | None = None, multi_label: bool = False) -> None:
    """Fills the protocol fields a config leaves unset (None) from its `train.init` release, in place.

    Args:
      config: a config (`finetune`'s leaves `PROTOCOL_FIELDS` to its start; the others set them all).
      variant: the variant of a `train.init` that is not a release (a converted directory), if known.
      num_classes: the class count of the checkpoint that eval.py or predict runs, for a config that takes it
        from the data (`finetune`'s); None leaves `model.num_classes` as it is.
      multi_label: the checkpoint that eval.py or predict runs was trained multi-label, so it is tested so.

    Raises:
      ValueError: fields are unset and `train.init` is not a release; the message names the flags to set.
    """
    if config.model.num_classes is None and num_classes is not None:
        config.model.num_classes = num_classes
    if multi_label:
        config.data.multi_label = True
    unset = [f for f in PROTOCOL_FIELDS if _get(config, f) is None]
    if not unset:
        return
    init = config.train.get("init") if "train" in config else None
    if init in releases.BY_NAME:
        known = release_protocol(init)
    else:
        known = {"model.variant": variant} if variant else {}
        if variant:
            known["train.dtype"] = "float32" if is_light(variant) else "bfloat16"
    missing = [f for f in unset if known.get(f) is None]
    if missing:
        raise ValueError(f"train.init={init} is not a released model, so its test protocol is unknown: set "
                         + " ".join(f"--config.{f}=..." for f in missing))
    for field in unset:
        section, key = field.split(".")
        config[section][key] = known[field]


def _get(config, field: str):
    section, key = field.split(".")
    return config[section].get(key) if section in config else None


def finetune(init: str = "k400_s16") -> ml_collections.ConfigDict:
    """A config for fine-tuning a release on any dataset, with the original's small-data recipe.

    The dataset is `data.name` (as dataset_builder built it) or `data.source`; the class count is the dataset's
    (None until train.py reads it; eval.py and predict take it from the checkpoint). The model and test protocol
    (`PROTOCOL_FIELDS`, None here) are those of `train.init` (`complete`), so one flag moves the whole run to
    another release. The recipe is Sense-X's fine-tuning of UniFormer-S 16x4 from K400 on UCF101 and HMDB51:
    25 epochs of which 5 warm up, lr 5e-5 for 128 clips, drop path 0.2, weaker RandAugment
    (`rand-m5-n2-mstd0.25`), mixup/cutmix with label smoothing.

    Args:
      init: the release to start from.

    Returns:
      The config.
    """
    config = base("k400", "s", 16, None)
    config.data.name = config_dict.placeholder(str)  # required: the dataset_builder --name of your dataset
    config.model.num_classes = config_dict.placeholder(int)
    config.train = recipe(videos=64, lr=5e-5, epochs=25, warmup=5, drop_path=0.2, init=init)
    config.train.init = init
    config.train.update(randaugment_policy="rand-m5-n2-mstd0.25", val_every=200, checkpoint_every=200)
    for field in PROTOCOL_FIELDS:
        section, key = field.split(".")
        config[section][key] = config_dict.placeholder(type(config[section][key]))
    return config
