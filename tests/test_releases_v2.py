"""UniFormerV2 releases and configs against what their publishers wrote: OpenGVLab's MODEL_ZOO.md and its
exp/*/run.sh and config.yaml (OpenGVLab/UniFormerV2 at 722a434), MMAction2's uniformerv2 README.md at 4d6c934 and at
471df4e (the superseded files), all copied into fixtures/uniformerv2_zoo; and what train.py builds from the
configs."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from uniformer_jax import evaluation, recipes, training
from uniformer_jax.data.class_lists import read_class_names
from uniformer_jax.models import uniformerv2, variants
from uniformer_jax.weights import releases
from uniformer_jax.weights.checkpoints import abstract_variables, load_directory, save_pretrained

ZOO = Path(__file__).parent / "fixtures" / "uniformerv2_zoo"
ROOT = Path(__file__).resolve().parents[1]
MODELS = {"UniFormerV2-B/16": "uniformerv2_b16", "UniFormerV2-L/14": "uniformerv2_l14",
          "UniFormerV2-L/14@336": "uniformerv2_l14_336"}
CLASSES = {"k710": 710, "k400": 400, "k600": 600, "k700": 700, "mitv1": 339, "sthv1": 174, "sthv2": 174, "anet": 200,
           "hacs": 200}
OPENGVLAB = [r for r in releases.RELEASES_V2 if r.form == "opengvlab"]
MMACTION2 = [r for r in releases.RELEASES_V2 if r.form == "mmaction2"]


def model_zoo_rows():
    """(url, variant, frozen, frames, crops, clips, top1) of every checkpoint link in MODEL_ZOO.md."""
    rows, frozen = [], False
    for line in (ZOO / "MODEL_ZOO.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and "Model" in cells[0] and "ckpt" not in line:
            frozen = cells[0].startswith("Frozen")
        url = re.search(r"\(\s*(https://\S+?\.pyth)\)", line)
        if not url:
            continue
        model = cells[0].replace("**Frozen** ", "")
        views = re.search(r"\b(\d+)(?:x(\d+)x(\d+))?\b", " ".join(cells[1:3])).groups()
        top1 = re.fullmatch(r"\d+\.\d", cells[3]) if len(cells) > 5 else None
        rows.append((url.group(1), MODELS[model], frozen or "**Frozen**" in cells[0], int(views[0]),
                     views[1] and int(views[1]), views[2] and int(views[2]), top1 and float(top1.group())))
    return rows


def test_every_opengvlab_release_is_registered():
    rows = model_zoo_rows()
    assert len(rows) == len(OPENGVLAB) == 49
    by_url = {r.url: r for r in OPENGVLAB}
    for url, variant, frozen, frames, crops, clips, top1 in rows:
        release = by_url[url]
        assert (release.variant, release.frames, release.top1) == (variant, frames, top1), url
        assert release.name.startswith("frozen_") == frozen
        if clips:  # the K710 table publishes no views; test_configs_are_opengvlab_runs checks them against run.sh
            assert release.views == (clips, crops), url
        dataset = url.split("/")[-2]
        if release.classes:
            assert len(read_class_names(release.classes)) == CLASSES[dataset]
    # The Hub copy Ask-Anything loads, under its own name; the rest come from OpenGVLab's bucket.
    hub = [r for r in OPENGVLAB if r.hub]
    assert [(r.hub, r.file) for r in hub] == [("Andy1621/uniformerv2", "k400+k710_uniformerv2_b16_8x224.pyth")]
    assert all(r.source == r.url for r in OPENGVLAB if not r.hub)


def mmaction2_rows():
    """(url, top1) of every checkpoint in MMAction2's README now and before 2023-02-09's superseded files went: the
    top-1 on OpenGVLab's test list where MMAction2 ran it, else on its own Kinetics copy."""
    rows = {}
    for readme in ("mmaction2_README.md", "mmaction2_README_471df4ee.md"):
        for line in (ZOO / readme).read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] == "uniform sampling":
                header = cells
            url = re.search(r"\[ckpt\]\((https://\S+?\.pth)\)", line)
            if url:
                scores = [cells[header.index(column)] for column in ("top1 acc", "mm-Kinetics top1 acc")
                          if column in header]
                scores = [float(c) for c in scores if re.fullmatch(r"\d+\.\d", c)]
                rows[url.group(1)] = scores[0] if scores else None
    return rows


def test_every_mmaction2_release_is_registered():
    rows = mmaction2_rows()
    assert {r.url for r in MMACTION2} == set(rows) and len(MMACTION2) == len(rows) == 30
    for release in MMACTION2:
        assert release.url.endswith(release.file) and release.file.endswith(f"-{release.sha256}.pth")
        assert release.top1 == rows[release.url], release.name
        # MMAction2 renamed the converted Kinetics heads' rows into its alphabetical lists (README note 4), and its
        # 20230612 K710 files into its K710 order; the 20221219 K710 files keep OpenGVLab's.
        dataset = re.search(r"_(kinetics\d+|mitv1)-rgb", release.file).group(1).replace("kinetics", "k")
        expected = {"k710": "k710-opengvlab" if "_20221219-" in release.file else "k710-mmaction2",
                    "mitv1": "mit-mmaction2"}.get(dataset, f"{dataset}-mmaction2")
        assert release.classes == expected
        # the config of its test protocol is OpenGVLab's release of the same model
        own = releases.BY_NAME[release.config]
        assert (own.variant, own.frames) == (release.variant, release.frames)


def runs():
    for run in sorted((ZOO / "exp").glob("*.run.sh")):
        yield run.name.removesuffix(".run.sh"), run


def shell_settings(text: str) -> dict[str, str]:
    """The `KEY VALUE` overrides of a run.sh, with its `$VARIABLES` substituted."""
    variables = dict(re.findall(r"^(\w+)=(\S+)$", text, re.M))
    return {key: variables.get(value[1:], value) if value.startswith("$") else value
            for key, value in re.findall(r"^\s+([A-Z_]+\.[A-Z_]+|NUM_SHARDS) (\S+)", text, re.M)}


def release_of(exp: str) -> str:
    """Our name of an exp/ folder: `k400+k710_l14_f32x336` -> `k400_k710_v2_l14_32x336`."""
    frozen, exp = exp.startswith("frozen_"), exp.removeprefix("frozen_")
    data, model, frames = exp.rsplit("_", 2)
    data = data.replace("+", "_").replace("ssv", "sthv")
    frames, size = frames.removeprefix("f").split("x")
    return ("frozen_" if frozen else "") + f"{data}_v2_{model}_{frames}" + ("x336" if size == "336" else "")


@pytest.mark.parametrize("exp,run", list(runs()), ids=lambda x: x if isinstance(x, str) else "")
def test_configs_are_opengvlab_runs(exp, run):
    name = release_of(exp.split("__")[1])
    config = importlib.import_module(f"configs.{name}").get_config()
    shell = shell_settings(run.read_text())
    yaml_config = yaml.safe_load(run.with_name(f"{exp}.config.yaml").read_text())
    v2, model = yaml_config["UNIFORMERV2"], yaml_config["MODEL"]
    release = releases.BY_NAME[name]
    assert config.release == release.config == name and config.paper.top1 == release.top1
    # the model
    assert config.model.num_classes == model["NUM_CLASSES"]
    architecture = variants.structure(config.model.structure, config.model.variant)
    assert architecture["n_layers"] == v2["N_LAYERS"] == len(v2["RETURN_LIST"])
    assert architecture.get("lmhra", False) == (not v2["NO_LMHRA"])
    assert architecture.get("double_lmhra", False) == v2.get("DOUBLE_LMHRA", False)
    assert architecture.get("temporal_downsample", False) == v2["TEMPORAL_DOWNSAMPLE"]
    assert architecture.get("frozen", False) == v2.get("FROZEN", False)
    # the test protocol
    d = config.data
    assert (d.mode, d.num_frames, d.crop_size, d.short_side) == (
        "segment", yaml_config["DATA"]["NUM_FRAMES"], yaml_config["DATA"]["TEST_CROP_SIZE"],
        yaml_config["DATA"]["TEST_CROP_SIZE"])
    views = (int(shell["TEST.NUM_ENSEMBLE_VIEWS"]), int(shell["TEST.NUM_SPATIAL_CROPS"]))
    if name.startswith("k710") or name == "frozen_k710_v2_l14_8x336":
        assert (d.clips, d.crops) == views  # MODEL_ZOO.md publishes none for K710
    assert config.eval.aggregate == "mean_softmax"  # softmax a view, then summed (OpenGVLab) or averaged (MMAction2)
    evaluation.Protocol.from_config(config)
    # the recipe
    t = config.train
    repeats = yaml_config["AUG"].get("NUM_SAMPLE", 1)
    assert t.batch_size == t.reference_batch == int(shell["TRAIN.BATCH_SIZE"]) * int(shell["NUM_SHARDS"]) * repeats
    assert t.repeats == repeats
    assert (t.lr, t.epochs, t.warmup_epochs) == (float(shell["SOLVER.BASE_LR"]), float(shell["SOLVER.MAX_EPOCH"]),
                                                 float(shell["SOLVER.WARMUP_EPOCHS"]))
    assert (t.drop_path, t.backbone_drop_path) == (float(v2["DROP_PATH_RATE"]), float(v2["BACKBONE_DROP_PATH_RATE"]))
    assert t.flip == yaml_config["DATA"].get("RANDOM_FLIP", True)
    assert t.remat == (model["CHECKPOINT_NUM"][0] if model["USE_CHECKPOINT"] else 0)
    assert (t.mixup, t.cutmix, t.label_smoothing, t.erasing, t.weight_decay, t.clip_norm) == (0, 0, 0, 0, 0.05, 20)
    assert t.freeze == ("frozen" if v2.get("FROZEN") else "none")
    pretrain = v2.get("PRETRAIN")
    if pretrain:  # a release of the zoo, where OpenGVLab released it
        expected = Path(pretrain).stem.replace("+", "_").replace("_uniformerv2_", "_v2_").removesuffix("x224")
        assert t.paper_init == expected
        assert expected in releases.BY_NAME or name == "mit_v2_l14_8x336"  # its K400 8x336 start is unreleased
    else:
        clip = {"uniformerv2_b16": "ViT-B-16.pt", "uniformerv2_l14": "ViT-L-14.pt",
                "uniformerv2_l14_336": "ViT-L-14-336px.pt"}  # OpenAI's file names
        assert t.paper_init == clip[release.variant]


def test_every_v2_config_is_a_release():
    files = {p.stem for p in (ROOT / "configs").glob("*_v2_*.py")}
    assert files == {r.name for r in OPENGVLAB} == {r.config for r in releases.RELEASES_V2}


@pytest.mark.parametrize("name", ["k400_k710_v2_l14_32x336", "mmaction2/k600_k710_v2_l14_16",
                                  "sthv2_v2_b16_32", "frozen_k400_v2_l14_8x336"])
def test_fine_tuning_from_a_v2_release_takes_its_protocol(name):
    config = importlib.import_module("configs.finetune").get_config()
    config.train.init = name
    recipes.complete(config)
    own = importlib.import_module(f"configs.{releases.BY_NAME[name].config}").get_config()
    for field in recipes.PROTOCOL_FIELDS:
        section, key = field.split(".")
        assert config[section][key] == own[section][key], field


def test_train_py_builds_the_configs_uniformerv2():
    """The model train.py trains from a config: its structure, the two drop-path rates and remat as blocks; a
    structure that the starting checkpoint does not have is refused."""
    config = importlib.import_module("configs.sthv2_v2_l14_16").get_config()
    model = training.model_of(config)
    assert isinstance(model, uniformerv2.UniFormerV2) and (model.layers, model.width) == (24, 1024)
    assert (model.n_layers, model.lmhra, model.double_lmhra, model.temporal_downsample) == (16, True, True, True)
    assert (model.drop_path_rate, model.backbone_drop_path_rate, model.remat) == (0.4, 0.2, 15)
    training.check_layout(config, 1)
    with pytest.raises(ValueError, match="structure"):
        training.architecture_of(config, {"architecture": variants.structure("kinetics", "uniformerv2_l14")})
    config.train.freeze = "stages:2"
    with pytest.raises(ValueError, match="no stages"):
        training.check_layout(config, 1)


def test_a_model_without_batchnorm_saves_and_loads(tmp_path):
    """UniFormerV2's Kinetics structure has no BatchNorm: train.py's empty statistics are not written, and the
    directory loads (as eval.py and predict load what train.py writes)."""
    model = variants.create_model("uniformerv2_b16", num_classes=4, n_layers=4)
    params = jax.tree.map(lambda a: np.ones(a.shape, a.dtype), abstract_variables(model)["params"])
    save_pretrained(tmp_path / "model", {"params": params, "batch_stats": {}},
                    {"variant": "uniformerv2_b16", "num_classes": 4, "ln_eps": 1e-5, "class_names": None,
                     "architecture": {"n_layers": 4}})
    loaded, variables = load_directory(tmp_path / "model")
    assert loaded.n_layers == 4 and set(variables) == {"params"}
    assert np.array_equal(variables["params"]["head"]["kernel"], params["head"]["kernel"])


@pytest.mark.parametrize("name", ["k400_k710_v2_l14_32x336", "sthv1_v2_b16_16", "mmaction2/k700_k710_v2_l14_16",
                                  "k400_b32"])
def test_predict_takes_a_releases_own_protocol(name):
    """`predict --checkpoint NAME` without a config tests as the release's config does (frames, views, size)."""
    from uniformer_jax import inference

    config = importlib.import_module(f"configs.{releases.BY_NAME[name].config}").get_config()
    default = evaluation.Protocol.default(releases.BY_NAME[name].variant)
    assert inference.release_protocol(default, name) == evaluation.Protocol.from_config(config)
