"""What every UniFormerV2 config shares; each `configs/*_v2_*.py` names one OpenGVLab release.

The test protocol is OpenGVLab's (spec §4): T frames sampled over the whole video (segment midpoints, each clip
offset), clips x crops as MODEL_ZOO.md publishes them, the short side resized to the crop (224 or 336), the mean
of the views' softmax. The recipe is its `exp/*/run.sh` over `config.yaml`: AdamW, lr for the global batch (not
scaled by the number of nodes), warmup then cosine to 1e-6, clipping at 20, cross-entropy without mixup, label
smoothing or random erasing, RandAugment m7-n4, two clips a video for Something-Something.
"""

from __future__ import annotations

import ml_collections

from uniformer_jax import recipes
from uniformer_jax.models import variants
from uniformer_jax.models.uniformerv2 import SPECS
from uniformer_jax.weights import releases


def structure_of(name: str) -> str:
    """The structure (`variants.STRUCTURES`) of a UniFormerV2 release.

    Args:
      name: a UniFormerV2 release name.

    Returns:
      `frozen` (frozen backbones), `sth` (Something-Something) or `kinetics` (the rest).
    """
    if name.removeprefix("mmaction2/").startswith("frozen_"):
        return "frozen"
    return "sth" if releases.v2_model(name)[0].startswith("sth") else "kinetics"


def uniformerv2(release: str, *, videos: int, nodes: int, lr: float, epochs: int, warmup: float, init: str,
                drop_path: float = 0.0, backbone_drop_path: float = 0.0, remat: int = 0) -> ml_collections.ConfigDict:
    """The config of an OpenGVLab release: its test protocol and its training run.

    Args:
      release: the release (`releases.RELEASES_V2`), e.g. `k400_k710_v2_l14_32x336`.
      videos: videos a step on each node of 8 GPUs (`TRAIN.BATCH_SIZE`).
      nodes: nodes (`NUM_SHARDS`); the batch is videos x nodes (x 2 clips for Something-Something).
      lr: `SOLVER.BASE_LR`, for that batch.
      epochs: `SOLVER.MAX_EPOCH`.
      warmup: `SOLVER.WARMUP_EPOCHS`.
      init: what the run started from (`MODEL.PRETRAIN`): a release name, or CLIP's encoder as OpenAI names its
        file (`ViT-B-16.pt`, `ViT-L-14.pt`, `ViT-L-14-336px.pt`; `python -m convert FILE DIR --num-classes N
        --structure S` makes a starting point of it for `train.init=DIR`).
      drop_path: `DROP_PATH_RATE`, the global UniBlocks' stochastic depth.
      backbone_drop_path: `BACKBONE_DROP_PATH_RATE`, the CLIP blocks'.
      remat: leading blocks recomputed in the backward pass (`CHECKPOINT_NUM` under `USE_CHECKPOINT`).

    Returns:
      The config.
    """
    r = releases.BY_NAME[release]
    dataset, variant, frames = releases.v2_model(release)
    size = SPECS[variant].size
    structure = structure_of(release)
    clips, crops = r.views
    config = recipes.base(dataset, variant, frames, release)
    config.model.structure = structure
    config.data.update(mode="segment", rate=1, clips=clips, crops=crops, short_side=size, crop_size=size)
    config.eval.aggregate = "mean_softmax"
    classes = config.model.num_classes
    gflops = variants.flops(variant, frames, size, classes, **variants.structure(structure, variant)) / 1e9
    config.paper = ml_collections.ConfigDict(dict(top1=r.top1, gflops=gflops * clips * crops,
                                                  views=f"{crops}x{clips}"))
    sth = structure == "sth"
    repeats = 2 if sth else 1  # AUG.NUM_SAMPLE
    config.train = recipes.recipe(videos=videos, lr=lr, epochs=epochs, warmup=warmup, drop_path=drop_path,
                                  init=init, flip=not sth)
    clips_a_step = videos * nodes * repeats
    config.train.update(
        batch_size=clips_a_step, reference_batch=clips_a_step, lr=lr, repeats=repeats, mix_group=1,
        mixup=0.0, cutmix=0.0, label_smoothing=0.0, erasing=0.0, crop_size=size,
        backbone_drop_path=backbone_drop_path,
        # What learns: the recipe's own `frozen` trains only the parts CLIP lacks (the frozen releases' choice);
        # none, or backbone (the heads alone).
        freeze="frozen" if structure == "frozen" else "none")
    del config.train.remat  # v1's is a count a stage
    config.train.remat = remat
    return config
