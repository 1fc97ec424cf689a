"""Every released UniFormer checkpoint: where it is published, how to check it, and what it holds.

Sources: Sense-X/UniFormer `video_classification/README.md` (Google Drive ids, top-1), the Hugging Face Hub repos
`Sense-X/uniformer_video`, `Sense-X/uniformer_image` and `Andy1621/uniformer` (file names and the sha256 of their
Git LFS objects), MMAction2's `configs/recognition/uniformer/metafile.yml` (URLs, top-1; its file names end in the
first 8 hex digits of the file's sha256). Sense-X publishes the files that are only on Google Drive under the names
its code loads them by (`uniformer_{small,base}_{k400,k600}_{F}x{R}.pth`, `..._sthv{1,2}_{F}_prek{400,600}.pth`);
no hash is published for them, so they are checked by the converter's strict key, shape and finiteness checks.
The lightweight XXS/XS models (Google Drive only) are named as Sense-X's code loads them: `uniformer_xxs16_160_k400.pth`
after `exp_light/uniformer_xxs16_160_k400`, `uniformer_xxs_160_in1k.pth` after `uniformer_light_ls_fp32.py`'s list.

UniFormerV2: OpenGVLab/UniFormerV2 `MODEL_ZOO.md` (flat `.pyth` state dicts on its OSS bucket, no hashes; the
`Andy1621/uniformerv2` Hub repo mirrors the K400 B/16 from K710) and MMAction2's `configs/recognition/uniformerv2/
README.md` (its current files, and the superseded 20221219 ones its configs and older README still name). Their
names are OpenGVLab's file names with `uniformerv2` shortened to `v2` and `x224` dropped (`k400_k710_v2_l14_32x336`);
MMAction2's are `mmaction2/` and the OpenGVLab name of the same model, `-20221219` for a superseded file.
"""

from __future__ import annotations

import dataclasses
import difflib

MMACTION2_URL = "https://download.openmmlab.com/mmaction/v1.0/recognition/uniformerv1/"
OPENGVLAB_URL = "https://pjlab-gvm-data.oss-cn-shanghai.aliyuncs.com/uniformerv2/"
MMACTION2_V2_URL = "https://download.openmmlab.com/mmaction/v1.0/recognition/uniformerv2/"


@dataclasses.dataclass(frozen=True)
class Release:
    name: str  # what users type: load_pretrained(name), --config.checkpoint=name, train.init=name
    file: str  # the published file name (and its name in a mirror)
    form: str  # checkpoint form, as `python -m convert --form`
    variant: str
    classes: str | None  # short name of the class list of the head rows; None: ImageNet's 1000 classes
    frames: int | None  # frames x sampling rate the model was trained with (None: 2D ImageNet weights)
    rate: int | None
    config: str | None  # the configs/ file of its test protocol
    top1: float | None  # the paper's top-1 (Kinetics, Something-Something: as configs/; ImageNet for in1k_*); None:
    # none published (the K710 models)
    sha256: str | None = None  # the full hash, or MMAction2's published 8-digit prefix; None: none published
    hub: str | None = None  # Hugging Face Hub repo that holds `file`
    drive: str | None = None  # Google Drive file id
    url: str | None = None  # a direct URL
    views: tuple[int, int] | None = None  # UniFormerV2's published test clips x crops (v1's follow from its dataset)

    @property
    def source(self) -> str:
        """Where the file comes from when no mirror is set."""
        if self.hub:
            return f"hf://{self.hub}/{self.file}"
        if self.url:
            return self.url
        return f"https://drive.google.com/uc?id={self.drive}"


def _sensex(name, size, dataset, frames, rate, top1, drive, hub=None, sha256=None, prek=None):
    variant = {"s": "uniformer_small", "b": "uniformer_base"}[size]
    if prek:
        file = f"{variant}_{dataset}_{frames}_prek{prek}.pth"
    else:
        file = f"{variant}_{dataset}_{frames}x{rate}.pth"
    config = name.removesuffix(f"_prek{prek}") if prek else name
    return Release(name, file, "sensex", variant, f"{dataset}-sensex", frames, rate, config, top1, sha256, hub,
                   drive)


def _mmaction2(size, frames, top1, stamp):
    variant = {"s": "uniformer_small", "b": "uniformer_base"}[size]
    file = f"uniformer-{variant.removeprefix('uniformer_')}_imagenet1k-pre_{frames}x4x1_kinetics400-rgb_{stamp}.pth"
    return Release(f"mmaction2/k400_{size}{frames}", file, "mmaction2", variant, "k400-mmaction2", frames, 4,
                   f"k400_{size}{frames}", top1, stamp.rsplit("-", 1)[1], url=MMACTION2_URL + file)


def _light(size, frames, crop, rate, top1, drive, layer_scale=False):
    name = f"k400_{size}{frames}_{crop}"
    variant = f"uniformer_{size}" + ("_ls" if layer_scale else "")
    return Release(name, f"uniformer_{size}{frames}_{crop}_k400.pth", "sensex", variant, "k400-sensex", frames, rate,
                   name, top1, drive=drive)


def _light_in1k(size, crop, top1, drive):
    return Release(f"in1k_{size}_{crop}", f"uniformer_{size}_{crop}_in1k.pth", "imagenet", f"uniformer_{size}", None,
                   None, None, None, top1, drive=drive)


SX_HUB = "Sense-X/uniformer_video"

RELEASES_V1 = (
    _sensex("k400_s8", "s", "k400", 8, 8, 78.4, "1-kitVTkWErHXI_x-sLItvK9-sOmb53j6"),
    _sensex("k400_s16", "s", "k400", 16, 4, 80.8, "1-jGZIIuTM5IYIpqkNTojhGhfMc7Gu9Kt"),
    _sensex("k400_s16x8", "s", "k400", 16, 8, 80.8, "174muWZJcZHieABDZMKiJ0tNeFLoEkJLx", SX_HUB,
            "d5fd7b0c49ee6a5422ef5d0c884d962c742003bfbd900747485eb99fa269d0db"),
    _sensex("k400_b8", "b", "k400", 8, 8, 79.8, "1hBxGU-QE8hGRBjSNCymJ7Au06LhluvTv"),
    _sensex("k400_b16", "b", "k400", 16, 4, 82.0, "15ipzFaZdTt-aHv7jcr_h_vgYD2X7D6AD", "Andy1621/uniformer",
            "a36e08ecff0a2b11020d6e88046353f80fdeb10b40fe167f2fbc0c1d976fb873"),
    _sensex("k400_b16x8", "b", "k400", 16, 8, 81.7, "1VoZcpFZbk9lEyRQ7gqRgT4CsnVt9g7uk"),
    _sensex("k400_b32", "b", "k400", 32, 4, 82.9, "1gHxx8cr1H0CNvngj1kB9ArgcPfJtqjCV", SX_HUB,
            "b432450566cdc4f50222e4851b5d304bba4444a699cdbb43fa529ceb18ae1f8e"),
    _sensex("k600_s16", "s", "k600", 16, 4, 82.8, "1-dqzjm5RZVspWHQLRD4S1vo4_6jyVltb"),
    _sensex("k600_s16x8", "s", "k600", 16, 8, 82.7, "1-c835NJjg_015WxLBQF-1cPdQsyWMWfY", SX_HUB,
            "2a9143a63691c442b23f912ed3489e5800fc5916fb7aa1b25322ad5da2466c6f"),
    _sensex("k600_b16", "b", "k600", 16, 4, 84.0, "1nBQCBCsCflhZ4OGUoGB3pAkc_GDau7vd"),
    _sensex("k600_b16x8", "b", "k600", 16, 8, 83.4, "1aidHdSd-h65-_EUkfNOdMMw0ZB8G5maY"),
    _sensex("k600_b32", "b", "k600", 32, 4, 84.5, "1-DwdVf8w8lYj-iFpU40pfEpog9VE5PQB", SX_HUB,
            "d44685e1d12e5aa413032e7719a8be45b95a19da4e7f76ac0e811f9a6f4825ae"),
    _sensex("sthv1_s16_prek400", "s", "sthv1", 16, 1, 57.2, "1-bdFsmXt2Ztf43lrVgmqS8_VYJ8tub6J", prek=400),
    _sensex("sthv1_s16_prek600", "s", "sthv1", 16, 1, 57.6, "1-YbYGjM15MDtQnrmCeZ9H2ybNdYTFkgO", SX_HUB,
            "9a4dbb1e6e2adeb817959edcfbd43cdbb41c7e5c1393f6a3335d0a089d4ba424", prek=600),
    _sensex("sthv1_s32_prek400", "s", "sthv1", 32, 1, 58.8, "1-Y5ADssqM2C8o_1jix48fQM788mVGWQ3", prek=400),
    _sensex("sthv1_s32_prek600", "s", "sthv1", 32, 1, 59.9, "1-XEgaGqXGp1EGzFl63ctApnvU54X27WP", prek=600),
    _sensex("sthv1_b16_prek400", "b", "sthv1", 16, 1, 59.1, "1uMq4W5lf17vOHUmccNjYLeTMqaWHSh6v", prek=400),
    _sensex("sthv1_b16_prek600", "b", "sthv1", 16, 1, 58.8, "1xpiL8zEDWYHFR55gOsbQiI41YEjTD89J", prek=600),
    _sensex("sthv1_b32_prek400", "b", "sthv1", 32, 1, 60.9, "18A3FuUUbdQ8ehMQ0D78qTTtm6YmIVWaO", prek=400),
    _sensex("sthv1_b32_prek600", "b", "sthv1", 32, 1, 61.0, "1xE1aJYAYFOlXOkpiIbJFHu_jSrr8reKm", SX_HUB,
            "8da7f948d7fcc72444dd3783ff12fb18e997d78acc3d70135d14687433448090", prek=600),
    _sensex("sthv2_s16_prek400", "s", "sthv2", 16, 1, 67.7, "1-Wq22024HB7tT8kPX6eSMn2GUNMI-_gY", prek=400),
    _sensex("sthv2_s16_prek600", "s", "sthv2", 16, 1, 69.4, "1-V1mQp4fIIYhaXUWCgZXkJ0H6ne0Z8rz", SX_HUB,
            "6b085f96980edf491386893902a5a304a63f4da395d528bcdeef6e7464bd160f", prek=600),
    _sensex("sthv2_s32_prek400", "s", "sthv2", 32, 1, 69.0, "1-5Q5S-NRmHFkIBygaRYpJLT7aI9cpmky", prek=400),
    _sensex("sthv2_s32_prek600", "s", "sthv2", 32, 1, 70.4, "1-1K5R3Ed4t8d_DZnJ62xysIt1dBNmx96", prek=600),
    _sensex("sthv2_b16_prek400", "b", "sthv2", 16, 1, 70.4, "1s78JBpnykyJ7pYEGRDK8BZL9seIRIUlC", prek=400),
    _sensex("sthv2_b16_prek600", "b", "sthv2", 16, 1, 70.2, "16nCBGWzMM8n8Vr_EY0UmvgzLG0S_QYef", prek=600),
    _sensex("sthv2_b32_prek400", "b", "sthv2", 32, 1, 71.1, "1-rpMARXnyvyj6YUJkIvVqtna86egpjoS", prek=400),
    _sensex("sthv2_b32_prek600", "b", "sthv2", 32, 1, 71.2, "1-lkRB3546l_ECuObN_IrHws1C9a-qKPr", SX_HUB,
            "b7a74408ed230e9671d30da2f596bef84900aaaa325a5793f6cb3ba25f721eae", prek=600),
    _mmaction2("s", 16, 80.9, "20221219-c630a037"),
    _mmaction2("b", 16, 82.0, "20221219-157c2e66"),
    _mmaction2("b", 32, 83.1, "20221219-b776322c"),
    # 2D ImageNet-1K weights (without Token Labeling or Layer Scale, as the video models start from); top-1 on IN-1K.
    Release("in1k_s", "uniformer_small_in1k.pth", "imagenet", "uniformer_small", None, None, None, None, 82.9,
            "fd192c31f8bd77670de8f171111bd51f56fd87e6aea45043ab2edc181e1fa775", hub="Andy1621/uniformer"),
    Release("in1k_b", "uniformer_base_in1k.pth", "imagenet", "uniformer_base", None, None, None, None, 83.9,
            "82c01015818cb897b00a29352043053df53ce4c02c2d012226b3a8a12ccb60eb", hub="Sense-X/uniformer_image"),
    # The lightweight K400 models (1 clip x 1 crop of sparse samples): configs `_ls` have layer scale.
    _light("xxs", 4, 128, 32, 63.2, "1EFBxDS2m4mpk_sYejnPuGSDRH_1ELDhx", layer_scale=True),
    _light("xxs", 4, 160, 32, 65.8, "1DtTFT7FZ_kUjxqXAYyWhfXSr_EIHQi8a", layer_scale=True),
    _light("xxs", 8, 128, 16, 68.3, "1E9VwV-XJQCmo9nBhxLxa9DdphZiIg38z", layer_scale=True),
    _light("xxs", 8, 160, 16, 71.4, "1Dxq82X8mBsfVOzij0HSeb1g4sdez71FM"),
    _light("xxs", 16, 128, 8, 73.3, "1DngSOmw0rStnYZlaCnz1xII6CU2d2R_j"),
    _light("xxs", 16, 160, 8, 75.1, "1DxqrNHb4h1ZKnEFaqbkKJAXQsyIFeD7b"),
    _light("xxs", 32, 160, 4, 77.9, "1EIVXRYn5UIkLaJGDpTBxTcyog_dKbcZe"),
    _light("xs", 32, 192, 4, 78.6, "1DtdX-keSB-RkH23KqtQH36IMOUmol1kw"),
    # Their 2D ImageNet-1K weights (Sense-X image_classification/README.md), at the resolutions they were trained at.
    _light_in1k("xxs", 128, 76.8, "1Cr7uB5hUck1BHioEROWZjfLpYRwg4Zps"),
    _light_in1k("xxs", 160, 79.1, "1CsXCzfVFPyM2mY8BA_1fO3q_VBngnF44"),
    _light_in1k("xxs", 192, 79.9, "1CjrCEnZCk2aLrN7nVG8vFvu3FAUL4_Y_"),
    _light_in1k("xxs", 224, 80.6, "1Cw9r_3c30N-esFI8RFYa6rQXJrr1rAHY"),
    _light_in1k("xs", 192, 81.5, "1Ce2Dk9-k_-sHt5dXp-gfNOEK37Jdcffv"),
    _light_in1k("xs", 224, 82.0, "1CwQ91fjuAu3Rhn3zV4vjAmQ8v36AfYPT"),
)

# ---- UniFormerV2 ----------------------------------------------------------------------------------------------
V2_MODELS = {"b16": "uniformerv2_b16", "l14": "uniformerv2_l14", "l14x336": "uniformerv2_l14_336"}
# OpenGVLab's class orders where they can be told (spec §6): K400 heads are K710's first 400 rows (Sense-X's
# order); MiT and Something-Something keep the datasets' own orders. Its K600, K700, ActivityNet and HACS lists
# are on the authors' Drive only: those heads carry no class names (`python -m convert --labels` adds them).
OPENGVLAB_CLASSES = {"k710": "k710-opengvlab", "k400": "k400-sensex", "mit": "mit-mmaction2",
                     "sthv1": "sthv1-sensex", "sthv2": "sthv2-sensex"}
OPENGVLAB_FOLDERS = {"mit": "mitv1"}


def v2_model(name: str) -> tuple[str, str, int]:
    """The dataset, variant and frames a UniFormerV2 release name spells.

    Args:
      name: `[frozen_]DATA[_k710]_v2_MODEL_FRAMES[x336]`, optionally after `mmaction2/` and before `-DATE`.

    Returns:
      `(dataset, variant, frames)`, e.g. `("k400", "uniformerv2_l14_336", 32)`.
    """
    stem = name.removeprefix("mmaction2/").split("-")[0]
    model, frames = stem.split("_v2_")[1].split("_")
    frames, _, size = frames.partition("x")
    return stem.removeprefix("frozen_").split("_")[0], V2_MODELS[model + (f"x{size}" if size else "")], int(frames)


def _opengvlab(name: str, top1: float | None, clips: int, crops: int, hub: str | None = None) -> Release:
    dataset, variant, frames = v2_model(name)
    file = name.replace("_v2_", "_uniformerv2_") + ("" if name.endswith("x336") else "x224") + ".pyth"
    url = f"{OPENGVLAB_URL}{OPENGVLAB_FOLDERS.get(dataset, dataset)}/{file}"
    if hub:  # the Hub copy (fetched from first) is named as OpenGVLab's configs name their PRETRAIN files
        file = file.replace("_k710_", "+k710_")
    return Release(name, file, "opengvlab", variant, OPENGVLAB_CLASSES.get(dataset), frames, 1, name, top1,
                   hub=hub, url=url, views=(clips, crops))


def _mm_v2(name: str, path: str, top1: float | None, classes: str, views: tuple[int, int] = (4, 3)) -> Release:
    """An MMAction2 release, `path` under its uniformerv2/ folder; tested as the OpenGVLab model it names."""
    _, variant, frames = v2_model(name)
    config = name.removeprefix("mmaction2/").split("-")[0]
    return Release(name, path.rsplit("/", 1)[-1], "mmaction2", variant, classes, frames, 1, config, top1,
                   path.removesuffix(".pth").rsplit("-", 1)[1], url=MMACTION2_V2_URL + path, views=views)


def _mm_kinetics(dataset: str, frames: int, size: int, top1: float, stamp: str) -> Release:
    """An L/14 Kinetics model MMAction2 converted from OpenGVLab's (its head rows in MMAction2's class order)."""
    name = f"mmaction2/{dataset}_k710_v2_l14_{frames}" + ("x336" if size == 336 else "")
    path = (f"kinetics{dataset[1:]}/uniformerv2-large-p14-res{size}_clip-kinetics710-pre_u{frames}_kinetics"
            f"{dataset[1:]}-rgb_{stamp}.pth")
    return _mm_v2(name, path, top1, f"{dataset}-mmaction2", (2 if frames == 32 else 4, 3))


MM_B16 = "uniformerv2-base-p16-res224_clip"  # the start of MMAction2's B/16 file names
RELEASES_V2 = (
    _opengvlab("k710_v2_b16_8", None, 4, 3), _opengvlab("k710_v2_l14_8", None, 4, 3),
    _opengvlab("k710_v2_l14_8x336", None, 4, 3), _opengvlab("frozen_k710_v2_l14_8x336", None, 3, 1),
    _opengvlab("k400_v2_b16_8", 84.4, 4, 3),
    _opengvlab("k400_k710_v2_b16_8", 85.6, 4, 3, hub="Andy1621/uniformerv2"),
    _opengvlab("k400_k710_v2_l14_8", 88.8, 4, 3), _opengvlab("k400_k710_v2_l14_16", 89.1, 4, 3),
    _opengvlab("k400_k710_v2_l14_32", 89.3, 2, 3), _opengvlab("k400_k710_v2_l14_32x336", 89.7, 2, 3),
    _opengvlab("k400_k710_v2_l14_64x336", 90.0, 2, 3), _opengvlab("frozen_k400_v2_l14_8x336", 86.7, 3, 1),
    _opengvlab("frozen_k400_k710_v2_l14_8x336", 87.8, 3, 1),
    _opengvlab("frozen_k400_k710_v2_l14_32x336", 88.9, 4, 3),
    _opengvlab("k600_v2_b16_8", 85.0, 4, 3), _opengvlab("k600_k710_v2_b16_8", 86.1, 4, 3),
    _opengvlab("k600_k710_v2_l14_8", 89.0, 4, 3), _opengvlab("k600_k710_v2_l14_16", 89.4, 4, 3),
    _opengvlab("k600_k710_v2_l14_32", 89.5, 2, 3), _opengvlab("k600_k710_v2_l14_32x336", 89.9, 2, 3),
    _opengvlab("k600_k710_v2_l14_64x336", 90.1, 2, 3), _opengvlab("frozen_k600_v2_l14_8x336", 87.4, 3, 1),
    _opengvlab("frozen_k600_k710_v2_l14_8x336", 88.2, 3, 1),
    _opengvlab("frozen_k600_k710_v2_l14_32x336", 89.2, 4, 3),
    _opengvlab("k700_v2_b16_8", 75.8, 4, 3), _opengvlab("k700_k710_v2_b16_8", 76.3, 4, 3),
    _opengvlab("k700_k710_v2_l14_8", 80.8, 4, 3), _opengvlab("k700_k710_v2_l14_16", 81.2, 4, 3),
    _opengvlab("k700_k710_v2_l14_32", 81.5, 2, 3), _opengvlab("k700_k710_v2_l14_32x336", 82.1, 2, 3),
    _opengvlab("k700_k710_v2_l14_64x336", 82.7, 2, 3), _opengvlab("frozen_k700_v2_l14_8x336", 79.6, 3, 1),
    _opengvlab("frozen_k700_k710_v2_l14_8x336", 79.7, 3, 1),
    _opengvlab("frozen_k700_k710_v2_l14_32x336", 80.8, 4, 3),
    _opengvlab("mit_v2_b16_8", 42.6, 4, 3), _opengvlab("mit_v2_l14_8", 47.0, 4, 3),
    _opengvlab("mit_v2_l14_8x336", 47.8, 4, 3),
    _opengvlab("sthv1_v2_b16_16", 56.8, 1, 3), _opengvlab("sthv1_v2_b16_32", 59.4, 1, 3),
    _opengvlab("sthv1_v2_l14_16", 60.5, 1, 3), _opengvlab("sthv1_v2_l14_32", 62.7, 1, 3),
    _opengvlab("sthv2_v2_b16_16", 69.5, 1, 3), _opengvlab("sthv2_v2_b16_32", 70.7, 1, 3),
    _opengvlab("sthv2_v2_l14_16", 72.1, 1, 3), _opengvlab("sthv2_v2_l14_32", 73.0, 1, 3),
    _opengvlab("anet_v2_l14_16", 94.3, 10, 3), _opengvlab("anet_v2_l14_32", 94.7, 10, 3),
    _opengvlab("hacs_v2_l14_16", 95.5, 10, 3), _opengvlab("hacs_v2_l14_32", 95.4, 10, 3),
    # MMAction2: B/16 trained there (top-1 on its own Kinetics copy), the rest converted (top-1 on OpenGVLab's).
    _mm_v2("mmaction2/k400_v2_b16_8", f"{MM_B16}_8xb32-u8_kinetics400-rgb/{MM_B16}_8xb32-u8_kinetics400-rgb_"
           "20230313-e29fc968.pth", 84.4, "k400-mmaction2"),
    _mm_v2("mmaction2/k400_k710_v2_b16_8", f"{MM_B16}-kinetics710-pre_8xb32-u8_kinetics400-rgb/{MM_B16}-"
           "kinetics710-pre_8xb32-u8_kinetics400-rgb_20230313-75be0806.pth", 85.8, "k400-mmaction2"),
    _mm_v2("mmaction2/k600_k710_v2_b16_8", f"{MM_B16}-kinetics710-pre_8xb32-u8_kinetics600-rgb/{MM_B16}-"
           "kinetics710-pre_8xb32-u8_kinetics600-rgb_20230313-544f06f0.pth", 86.4, "k600-mmaction2"),
    _mm_v2("mmaction2/k700_v2_b16_8", f"{MM_B16}_8xb32-u8_kinetics700-rgb/{MM_B16}_8xb32-u8_kinetics700-rgb_"
           "20230313-f02e48ad.pth", 75.9, "k700-mmaction2"),
    _mm_v2("mmaction2/k700_k710_v2_b16_8", f"{MM_B16}-kinetics710-pre_8xb32-u8_kinetics700-rgb/{MM_B16}-"
           "kinetics710-pre_8xb32-u8_kinetics700-rgb_20230313-69070837.pth", 76.3, "k700-mmaction2"),
    _mm_v2("mmaction2/mit_v2_b16_8", f"{MM_B16}-kinetics710-kinetics-k400-pre_16xb32-u8_mitv1-rgb/{MM_B16}-"
           "kinetics710-kinetics-k400-pre_16xb32-u8_mitv1-rgb_20230313-a6f4a567.pth", 42.3, "mit-mmaction2"),
    _mm_kinetics("k400", 8, 224, 88.7, "20221219-972ea063"), _mm_kinetics("k400", 16, 224, 89.0, "20221219-6dc86d05"),
    _mm_kinetics("k400", 32, 224, 89.3, "20221219-56a46f64"), _mm_kinetics("k400", 32, 336, 89.5, "20221219-1dd7650f"),
    _mm_kinetics("k600", 8, 224, 89.0, "20221219-cf88e4c2"), _mm_kinetics("k600", 16, 224, 89.4, "20221219-38ff0e3e"),
    _mm_kinetics("k600", 32, 224, 89.2, "20221219-d450d071"), _mm_kinetics("k600", 32, 336, 89.8, "20221219-f984f5d2"),
    _mm_kinetics("k700", 8, 224, 80.8, "20221219-bfb9f401"), _mm_kinetics("k700", 16, 224, 81.2, "20221219-745209d2"),
    _mm_kinetics("k700", 32, 224, 81.4, "20221219-eebe7056"), _mm_kinetics("k700", 32, 336, 82.1, "20221219-95cf9046"),
    _mm_v2("mmaction2/mit_v2_l14_8", "mitv1/uniformerv2-large-p16-res224_clip-kinetics710-kinetics-k400-pre_u8_"
           "mitv1-rgb_20221219-882c0598.pth", 47.0, "mit-mmaction2"),
    _mm_v2("mmaction2/mit_v2_l14_8x336", "mitv1/uniformerv2-large-p16-res336_clip-kinetics710-kinetics-k400-pre_u8_"
           "mitv1-rgb_20221219-9020986e.pth", 47.7, "mit-mmaction2"),
    # K710 (no test figures but B/16's): the 20230612 files in MMAction2's K710 order, the 20221219 in OpenGVLab's.
    _mm_v2("mmaction2/k710_v2_b16_8", f"{MM_B16}-pre_u8_kinetics710-rgb/{MM_B16}-pre_u8_kinetics710-rgb_20230612-"
           "63cdbad9.pth", 78.9, "k710-mmaction2"),
    _mm_v2("mmaction2/k710_v2_l14_8", "kinetics710/uniformerv2-large-p14-res224_clip-pre_u8_kinetics710-rgb_"
           "20230612-d002a407.pth", None, "k710-mmaction2"),
    _mm_v2("mmaction2/k710_v2_l14_8x336", "kinetics710/uniformerv2-large-p14-res336_clip-pre_u8_kinetics710-rgb_"
           "20230612-d723ddc1.pth", None, "k710-mmaction2"),
    # Superseded files that MMAction2's configs (K710 B/16 as the fine-tunes' start) and older README still name.
    _mm_v2("mmaction2/k710_v2_b16_8-20221219", f"kinetics710/{MM_B16}-pre_u8_kinetics710-rgb_20221219-77d34f81.pth",
           None, "k710-opengvlab"),
    _mm_v2("mmaction2/k710_v2_l14_8-20221219", "kinetics710/uniformerv2-large-p14-res224_clip-pre_u8_kinetics710-"
           "rgb_20221219-bfaae587.pth", None, "k710-opengvlab"),
    _mm_v2("mmaction2/k710_v2_l14_8x336-20221219", "kinetics710/uniformerv2-large-p14-res336_clip-pre_u8_"
           "kinetics710-rgb_20221219-55878cdc.pth", None, "k710-opengvlab"),
    _mm_v2("mmaction2/k400_k710_v2_b16_8-20221219", f"kinetics400/{MM_B16}-kinetics710-pre_u8_kinetics400-rgb_"
           "20221219-203d6aac.pth", 85.8, "k400-mmaction2"),
    _mm_v2("mmaction2/k600_k710_v2_b16_8-20221219", f"kinetics600/{MM_B16}-kinetics710-pre_u8_kinetics600-rgb_"
           "20221219-c62c4da4.pth", 86.4, "k600-mmaction2"),
    _mm_v2("mmaction2/k700_k710_v2_b16_8-20221219", f"kinetics700/{MM_B16}-kinetics710-pre_u8_kinetics700-rgb_"
           "20221219-8a7c4ac4.pth", 76.3, "k700-mmaction2"),
    _mm_v2("mmaction2/mit_v2_b16_8-20221219", f"mitv1/{MM_B16}-kinetics710-kinetics-k400-pre_u8_mitv1-rgb_"
           "20221219-fddbc786.pth", 42.7, "mit-mmaction2"),
)
RELEASES = RELEASES_V1 + RELEASES_V2

BY_NAME = {r.name: r for r in RELEASES}


def unknown(name: str) -> str:
    """What to say of a name that is no release: the closest names, and where the list is.

    Args:
      name: what the user typed.

    Returns:
      The sentence for an error message.
    """
    close = difflib.get_close_matches(name, BY_NAME, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return f"no released model is called {name!r}; {hint}`python -m uniformer_jax.zoo list` lists them all"
