"""The converter: round trips, inflation, class orders, and one clear error for every kind of bad input."""

from __future__ import annotations

import json
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from conftest import reference_model, save_mmaction2, save_sensex, sensex_state_dict, video
from flax import traverse_util

import convert.__main__ as cli
from uniformer_jax import CheckpointError, load_pretrained, save_pretrained
from uniformer_jax.benchmarks import mmaction2
from uniformer_jax.data.class_lists import CLASS_LISTS, class_list_path, head_rows, read_class_names
from uniformer_jax.weights import torch_keys as keys
from uniformer_jax.weights.checkpoints import read_metadata, remove_leftovers

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args):
    """`python -m convert` in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "convert", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def mm_checkpoint(tmp_path_factory):
    return save_mmaction2(reference_model("uniformer_small"), tmp_path_factory.mktemp("mm") / "mm.pth")


def test_round_trip_to_torch_is_bit_exact(tmp_path, mm_checkpoint):
    result = run_cli(mm_checkpoint, tmp_path / "ck")
    assert result.returncode == 0, result.stderr
    result = run_cli("--to-torch", tmp_path / "ck", tmp_path / "back.pth")
    assert result.returncode == 0, result.stderr
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    source = sensex_state_dict(reference_model("uniformer_small"))
    assert set(back) == set(source)
    for key, tensor in source.items():
        if key.endswith("num_batches_tracked"):
            assert back[key].dtype == torch.int64 and back[key].shape == ()
        else:
            assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key
    # ... and loads strictly into the PyTorch model.
    target = mmaction2.build("uniformer_small")
    target.backbone.load_state_dict({k: v for k, v in back.items() if not k.startswith("head.")}, strict=True)


def test_jax_weights_go_back_to_pytorch(tmp_path, mm_checkpoint):
    """Weights changed in JAX (as by fine-tuning) come back into PyTorch and compute the same logits there."""
    assert cli.main([str(mm_checkpoint), str(tmp_path / "ck")]) == 0
    model, variables = load_pretrained(tmp_path / "ck")
    variables = jax.tree.map(lambda x: x * 1.01, variables)
    save_pretrained(tmp_path / "tuned", variables, {k: v for k, v in read_metadata(tmp_path / "ck").items()
                                                    if k != "format_version"})
    assert cli.main(["--to-torch", str(tmp_path / "tuned"), str(tmp_path / "tuned.pth")]) == 0
    state = torch.load(tmp_path / "tuned.pth", weights_only=True)
    target = mmaction2.build("uniformer_small")
    target.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")})
    target.cls_head.fc_cls.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})
    x = video((1, 8, 64, 64, 3))
    np.testing.assert_allclose(model.apply(variables, x), mmaction2.logits(target.eval(), x), atol=1e-4)


def two_d_state_dict(seed=0) -> dict[str, torch.Tensor]:
    """An ImageNet-1K 2D UniFormer-S state dict: the 3D keys, with 2D kernels (Sense-X `slowfast/models/uniformer.py`,
    `get_pretrained_model`)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in sensex_state_dict(reference_model("uniformer_small")).items():
        if value.ndim == 5:
            value = torch.randn(value.shape[:2] + value.shape[3:], generator=gen) * 0.05
        elif key.startswith("head."):
            value = torch.randn((1000,) + value.shape[1:], generator=gen) * 0.02
        out[key] = value
    return out


@pytest.mark.parametrize("mode,center", [("average", False), ("center", True)])
def test_imagenet_inflation_matches_mmaction2s_definition(tmp_path, mode, center):
    two_d = two_d_state_dict()
    torch.save({"model": two_d}, tmp_path / "in1k.pth")
    assert cli.main([str(tmp_path / "in1k.pth"), str(tmp_path / "ck"), "--inflate", mode,
                     "--num-classes", "400"]) == 0
    model, variables = load_pretrained(tmp_path / "ck")
    assert model.num_classes == 400
    state = keys.to_torch(variables)
    backbone = mmaction2.build("uniformer_small").backbone
    for key, w2d in two_d.items():
        if key.startswith("head."):
            continue
        if w2d.ndim == 4:
            t = backbone.state_dict()[key].shape[2]
            expected = backbone._inflate_weight(w2d, t, center=center)  # MMAction2's own inflation
            np.testing.assert_allclose(state[key], expected.numpy(), rtol=1e-6, atol=1e-8, err_msg=key)
        elif not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(state[key], w2d.numpy(), err_msg=key)
    head = np.asarray(variables["params"]["head"]["kernel"])
    assert head.shape == (512, 400) and head.std() == pytest.approx(0.02, rel=0.1)


def test_imagenet_checkpoint_keeps_its_1000_class_head(tmp_path):
    torch.save({"model": two_d_state_dict()}, tmp_path / "in1k.pth")
    result = run_cli(tmp_path / "in1k.pth", tmp_path / "ck")
    assert result.returncode == 0, result.stderr
    assert "1000 classes (converted head), from a imagenet checkpoint" in result.stdout
    model, variables = load_pretrained(tmp_path / "ck")
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"], two_d_state_dict()["head.weight"].T)


def test_reorder_mmaction2_head_into_sensex_class_order(tmp_path, mm_checkpoint):
    mm_names = class_list_path("k400-mmaction2")
    sx_names = class_list_path("k400-sensex")
    assert cli.main([str(mm_checkpoint), str(tmp_path / "ck"), "--labels", "k400-mmaction2",
                     "--reorder-to", "k400-sensex"]) == 0
    model, variables = load_pretrained(tmp_path / "ck")
    assert read_metadata(tmp_path / "ck")["class_names"][:3] == ["riding a bike", "marching", "dodgeball"]
    x = video((1, 8, 64, 64, 3))
    ours = np.asarray(model.apply(variables, x))[0]
    theirs = mmaction2.logits(reference_model("uniformer_small"), x)[0]
    alphabetical = mm_names.read_text().splitlines()
    for line in sx_names.read_text().splitlines():  # 'name<TAB>sensex index', read here without the package
        name, index = line.split("\t")
        assert abs(ours[int(index)] - theirs[alphabetical.index(name)]) < 1e-4, name


CHANNEL_MAPS = Path(__file__).parent / "fixtures" / "k710_channel_maps"  # MMAction2's, before and after 9dc33d98


@pytest.mark.parametrize("k710,maps", [("k710-opengvlab", "old_map"), ("k710-mmaction2", "map")])
def test_k710_rows_are_mmaction2s_channel_maps(k710, maps):
    # MMAction2 `configs/recognition/uniformerv2/k710_channel_map/map_k{400,600,700}.json`: entry i is the K710 row
    # of MMAction2's class i; the old maps go with the old (OpenGVLab) K710 order, the new ones with MMAction2's.
    for k in (400, 600, 700):
        expected = json.loads((CHANNEL_MAPS / f"{maps}_k{k}.json").read_text())
        rows = head_rows(read_class_names(k710), read_class_names(f"k{k}-mmaction2"))
        assert rows.tolist() == expected, k


def test_k710_head_becomes_a_k400_head(tmp_path):
    reference = reference_model(num_classes=710)
    save_sensex(reference, tmp_path / "k710.pth")
    assert cli.main([str(tmp_path / "k710.pth"), str(tmp_path / "ck"), "--labels", "k710-opengvlab",
                     "--reorder-to", "k400-mmaction2"]) == 0
    meta = read_metadata(tmp_path / "ck")
    assert meta["num_classes"] == 400 and meta["class_names"] == read_class_names("k400-mmaction2")
    _, variables = load_pretrained(tmp_path / "ck")
    rows = json.loads((CHANNEL_MAPS / "old_map_k400.json").read_text())
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"],
                                  reference.cls_head.fc_cls.weight.detach().numpy()[rows].T)


def test_k600_class_orders_match_by_name():
    sensex = read_class_names("k600-sensex")
    mmaction = read_class_names("k600-mmaction2")
    order = head_rows(sensex, mmaction)
    assert sorted(order) == list(range(600))
    assert sensex[order[mmaction.index("passing American football (in game)")]] == \
        "passing_American_football_in_game"


@pytest.mark.parametrize("name,count", [("k400-sensex", 400), ("k600-sensex", 600), ("sthv1-sensex", 174),
                                        ("sthv2-sensex", 174), ("k400-mmaction2", 400), ("k600-mmaction2", 600),
                                        ("k700-mmaction2", 700), ("k710-opengvlab", 710), ("k710-mmaction2", 710),
                                        ("mit-mmaction2", 339)])
def test_packaged_class_lists_read(name, count):
    names = read_class_names(name)
    assert len(names) == count and len(set(names)) == count
    # MMAction2's label maps are alphabetical (MMAction2 `tools/data/kinetics/label_map_k400.txt`)
    if name.startswith(("k400", "k600", "k700")) and name.endswith("mmaction2"):
        assert names == sorted(names)


def test_sensex_class_orders_as_the_spec_describes():
    # Sense-X `data_list/k400/kinetics_400_categroies.txt`: riding a bike 0, marching 1, ..., abseiling 341
    k400 = read_class_names("k400-sensex")
    assert k400[:2] == ["riding a bike", "marching"] and k400[341] == "abseiling"
    assert read_class_names("k600-sensex")[0] == "feeding_fish"
    assert head_rows(k400, read_class_names("k400-mmaction2")).shape == (400,)


def test_every_packaged_class_list_is_listed():
    files = {p.name for p in class_list_path("k400-sensex").parent.iterdir() if p.suffix in (".txt", ".tsv")}
    assert files == {f for f, _ in CLASS_LISTS.values()}
    result = subprocess.run([sys.executable, "-m", "uniformer_jax.labels"], capture_output=True, text=True)
    assert result.returncode == 0 and all(name in result.stdout for name in CLASS_LISTS)


def test_unknown_class_list_names_the_short_names(tmp_path):
    with pytest.raises(ValueError, match="k400-sensex"):
        read_class_names("k400-sense")


# ---- bad input: one clear message, exit status 2, no traceback, the destination untouched ----

def assert_refused(result, *phrases):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def altered(tmp_path, change) -> Path:
    state = {k: v.clone() for k, v in sensex_state_dict(reference_model("uniformer_small")).items()}
    change(state)
    torch.save(state, tmp_path / "altered.pth")
    return tmp_path / "altered.pth"


def test_missing_and_unexpected_keys_are_all_listed(tmp_path):
    def change(state):
        del state["blocks3.2.attn.qkv.weight"], state["norm.running_var"]
        state["blocks3.2.attn.qkv_extra.weight"] = torch.zeros(3)
    result = run_cli(altered(tmp_path, change), tmp_path / "out")
    assert_refused(result, "missing: blocks3.2.attn.qkv.weight (960, 320)", "missing: norm.running_var (512,)",
                   "unexpected: blocks3.2.attn.qkv_extra.weight (3,)")
    assert not (tmp_path / "out").exists()


def test_shape_mismatch_is_named(tmp_path):
    def change(state):
        state["blocks1.0.attn.weight"] = torch.zeros(64, 1, 3, 3, 3)
    assert_refused(run_cli(altered(tmp_path, change), tmp_path / "out"),
                   "shape of blocks1.0.attn.weight: (64, 1, 3, 3, 3), expected (64, 1, 5, 5, 5)")


def test_non_finite_values_are_named(tmp_path):
    def change(state):
        state["blocks2.1.conv1.bias"][3] = float("nan")
        state["head.weight"][0, 0] = float("inf")
    assert_refused(run_cli(altered(tmp_path, change), tmp_path / "out"), "non-finite", "blocks2.1.conv1.bias",
                   "head.weight")


def test_unknown_variant(tmp_path):
    def change(state):
        for key in [k for k in state if k.startswith("blocks3.7.")]:
            del state[key]
    assert_refused(run_cli(altered(tmp_path, change), tmp_path / "out"), "unknown variant", "(3, 4, 7, 3)")


def test_truncated_checkpoint(tmp_path, mm_checkpoint):
    data = mm_checkpoint.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    assert_refused(run_cli(tmp_path / "cut.pth", tmp_path / "out"), "not a readable PyTorch checkpoint")


def test_file_that_is_no_checkpoint(tmp_path):
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    assert_refused(run_cli(tmp_path / "notes.pth", tmp_path / "out"), "not a readable PyTorch checkpoint")
    assert_refused(run_cli(tmp_path / "absent.pth", tmp_path / "out"), "no such file")


class RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_code_never_runs(tmp_path):
    payload = RunsCode()
    payload.marker = str(tmp_path / "code-ran")
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"state_dict": payload}, f)
    torch.save({"model": payload, "x": torch.zeros(1)}, tmp_path / "evil_zip.pth")
    for path in ("evil.pth", "evil_zip.pth"):
        result = run_cli(tmp_path / path, tmp_path / "out")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "code-ran").exists()


def test_failed_conversion_leaves_destination_as_it_was(tmp_path, mm_checkpoint):
    assert run_cli(mm_checkpoint, tmp_path / "ck").returncode == 0
    before = {p: p.read_bytes() for p in (tmp_path / "ck").rglob("*") if p.is_file()}
    assert_refused(run_cli(mm_checkpoint, tmp_path / "ck"), "already exists")
    bad = altered(tmp_path, lambda state: state.pop("head.bias"))
    assert_refused(run_cli(bad, tmp_path / "ck", "--force"), "missing: head.bias")
    after = {p: p.read_bytes() for p in (tmp_path / "ck").rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["altered.pth", "ck"]  # no temporary left behind


KILLED_REPLACEMENT = """
import os, shutil, signal, sys
from uniformer_jax.weights import checkpoints
from uniformer_jax.weights.checkpoints import load_directory, read_metadata, save_pretrained
model, variables = load_directory(sys.argv[1])
metadata = {**read_metadata(sys.argv[1]), "source_file": sys.argv[3]}
# kill -9 at the moment the new copy is in place and the old one is about to be deleted (the only rmtree of a
# path that exists)
remove = shutil.rmtree
def killing(path, *args, **kwargs):
    if os.path.exists(path):
        os.kill(os.getpid(), signal.SIGKILL)
    remove(path, *args, **kwargs)
shutil.rmtree = killing
save_pretrained(sys.argv[2], variables, metadata, overwrite=True)
"""


@pytest.mark.parametrize("swap", [True, False], ids=["rename-exchange", "rename-aside"])
def test_a_kill_while_a_model_is_replaced_leaves_a_whole_model_and_cleanable_leftovers(tmp_path, mm_checkpoint,
                                                                                        swap):
    assert cli.main([str(mm_checkpoint), str(tmp_path / "ck")]) == 0
    shutil.copytree(tmp_path / "ck", tmp_path / "model")
    script = KILLED_REPLACEMENT if swap else KILLED_REPLACEMENT.replace(
        "remove = ", "checkpoints._exchange = lambda a, b: False  # as where renameat2 cannot swap\nremove = ")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "ck"), str(tmp_path / "model"), "second"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert read_metadata(tmp_path / "model")["source_file"] == "second"  # the new one, whole
    load_pretrained(tmp_path / "model")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".model.")]
    assert len(leftovers) == 1  # the old copy, not yet deleted
    remove_leftovers(tmp_path / "model")  # what train.py does when it starts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "model"]


def test_label_problems(tmp_path, mm_checkpoint):
    assert_refused(run_cli(mm_checkpoint, tmp_path / "a", "--labels", "k600-mmaction2"),
                   "names 600 classes, but the head has 400")
    assert_refused(run_cli(mm_checkpoint, tmp_path / "b", "--reorder-to", "k400-sensex"),
                   "needs --labels")
    names = (class_list_path("k400-mmaction2")).read_text().splitlines()
    names[5] = "juggling chainsaws"
    (tmp_path / "odd.txt").write_text("\n".join(names))
    assert_refused(run_cli(mm_checkpoint, tmp_path / "c", "--labels", tmp_path / "odd.txt", "--reorder-to",
                           class_list_path("k400-sensex")), "juggling chainsaws")


def test_converted_checkpoint_problems(tmp_path, mm_checkpoint):
    with pytest.raises(CheckpointError, match="not a converted checkpoint"):
        load_pretrained(tmp_path)
    assert cli.main([str(mm_checkpoint), str(tmp_path / "ck")]) == 0
    meta = tmp_path / "ck" / "uniformer.json"
    meta.write_text(meta.read_text().replace('"uniformer_small"', '"uniformer_base"'))
    with pytest.raises(CheckpointError, match="missing: params/blocks1_3/attn/kernel"):
        load_pretrained(tmp_path / "ck")
    assert_refused(run_cli("--to-torch", tmp_path / "ck", tmp_path / "out.pth"), "does not fit uniformer_base")
    assert not (tmp_path / "out.pth").exists()


def test_every_form_gives_the_same_variables(tmp_path):
    reference = reference_model("uniformer_small")
    sensex = sensex_state_dict(reference)
    files = {"sensex": save_sensex(reference, tmp_path / "sx.pth"),
             "mmaction2": save_mmaction2(reference, tmp_path / "mm.pth")}
    torch.save({"model_state": {f"module.{k}": v for k, v in sensex.items()}, "epoch": 3}, tmp_path / "tr.pyth")
    files["sensex-train"] = tmp_path / "tr.pyth"
    trees = {}
    for form, path in files.items():
        assert cli.main([str(path), str(tmp_path / form)]) == 0
        assert read_metadata(tmp_path / form)["source_form"] == form
        trees[form] = traverse_util.flatten_dict(load_pretrained(tmp_path / form)[1])
    for form in ("mmaction2", "sensex-train"):
        for path, value in trees["sensex"].items():
            np.testing.assert_array_equal(trees[form][path], value)
