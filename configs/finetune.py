"""Fine-tune a released model on your own dataset (docs/finetune.md walks through it):

    python train.py --config configs/finetune.py --config.data.name=NAME [--config.train.init=k400_s16]
        [--config.train.freeze=backbone]

NAME is the dataset_builder --name of the dataset; the class count is the dataset's. The model and the test
protocol (frames, sampling, views, sizes) follow train.init, any release of `python -m uniformer_jax.zoo list`.
The recipe, `recipes.finetune`: Sense-X's UCF101/HMDB51 fine-tuning of UniFormer-S from K400 (25 epochs, 5 of
warmup, lr 5e-5 for a batch of 128 clips, scaled linearly with train.batch_size, drop path 0.2, RandAugment
rand-m5-n2-mstd0.25, mixup/cutmix with label smoothing 0.1). train.freeze: none, backbone (a linear probe) or
stages:N (the first N stages frozen). Sense-X tests UCF101 with 5 clips x 3 crops: --config.data.clips=5
--config.data.crops=3.
"""

from uniformer_jax import recipes


def get_config():
    return recipes.finetune(init="k400_s16")
