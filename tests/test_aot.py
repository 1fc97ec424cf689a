"""Ahead-of-time compilation for TPU pods (uniformer_jax.aot), by libtpu on this CPU machine, and train.py's dry run.

Sizes are cut (4 frames of 32x32, no mixing) so that each UniFormer-S train step compiles in well under a minute;
the model, optimiser state, mesh and shardings are train.py's own.
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import k400_s16
from uniformer_jax import aot, sharding, step_analysis
from uniformer_jax.models import variants

# UniFormer-S with a 400-class head (Sense-X `video_classification/README.md`, the paper's Table 1)
S_PARAMS = 21_400_400


def small_s16(**train):
    config = k400_s16.get_config()
    config.data.num_frames = 4
    config.train.update({"crop_size": 32, "batch_size": 8, "mixup": 0.0, "cutmix": 0.0, "drop_path": 0.0, **train})
    return config


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "uniformer_jax.aot", *args], capture_output=True, text=True,
                          env=env)


@pytest.fixture(scope="module")
def v5p():
    """v5p-16: 8 chips on 2 hosts of 4 (Google's v5p slice shapes)."""
    return step_analysis.topology("v5p:2x2x2")


def test_train_step_sharded_over_a_pod_slice(v5p):
    """2 clips a chip in 2 micro-batches of 1, parameters and AdamW state split over fsdp=2."""
    devices, chip = v5p
    assert (len(devices), len({d.process_index for d in devices})) == (8, 2)
    config = small_s16(fsdp=2, accumulate=2, batch_size=16, mix_group=8)
    fn, args, batch = step_analysis.train_program(config, devices)
    compiled = fn.lower(*args).compile()
    cost = step_analysis.with_micro_batches(step_analysis._cost(compiled), config, args[0])
    r = step_analysis.analyse(compiled, args, devices, chip, batch, cost)
    b = r["per_chip_bytes"]
    assert b["total"] == b["arguments"] + b["outputs"] - b["aliased"] + b["temporaries"] + b["code"]
    assert b["arguments"] >= sum(r["argument_groups"].values())  # the compiler's count, with its padding
    assert b["aliased"] >= r["argument_groups"]["parameters"]  # the donated state is updated in place
    assert r["fits"] and b["total"] < r["hbm_bytes"] == 95 * 2 ** 30
    # Whole, each chip would hold the float32 model and AdamW's two moments (3 x 4 bytes a parameter): split
    # over 2, the arrays of 2^18 elements and more (most of the model) are halved, the small ones stay whole.
    whole = 3 * 4 * S_PARAMS + r["argument_groups"]["batch"]
    assert 1.6 < whole / b["arguments"] <= 2.0
    # Split parameters are gathered whole before use; gradients and BatchNorm statistics are summed.
    assert r["collectives"]["all-gather"]["count"] > 0 and r["collectives"]["all-reduce"]["count"] > 0
    # Train FLOPs are about 3x the forward pass (2 FLOPs a multiply-add, fvcore's `flop_count` counting 1) for
    # the 2 clips, although XLA's cost analysis counts the micro-batch loop's body once.
    forward = 2 * variants.flops("uniformer_small", 4, 32, 400)
    assert 0.8 < r["flops_per_chip"] / (2 * 3 * forward) < 1.6
    assert r["step_seconds_lower_bound"] > 0 and r["clips_per_second_upper_bound"] > 0
    # The depthwise convolutions compile as TPU grouped convolutions, not the CPU's shift-and-add form.
    hlo = compiled.as_text()
    assert "feature_group_count=64" in hlo and "feature_group_count=128" in hlo


def test_collectives_counted_with_their_bytes(v5p):
    """A gather of a (8, 1024) float32 array and a sum over its rows: 32 KiB and 4 KiB, one op each."""
    devices, _ = v5p
    mesh = sharding.data_mesh(devices)
    x = jax.ShapeDtypeStruct((8, 1024), jnp.float32, sharding=NamedSharding(mesh, P("data")))
    whole = NamedSharding(mesh, P())
    fn = jax.jit(lambda x: (x * 2, x.sum(0)), out_shardings=(whole, whole))
    found = step_analysis.collectives(fn.lower(x).compile().as_text())
    assert found["all-gather"] == {"count": 1, "bytes": 8 * 1024 * 4}
    assert found["all-reduce"] == {"count": 1, "bytes": 1024 * 4}
    assert found["reduce-scatter"]["count"] == found["all-to-all"]["count"] == 0


def test_eval_step_on_a_pod_slice(v5p):
    """eval.py's step: 8 videos of 4 clips over 8 chips, the model whole on each, no communication."""
    devices, chip = v5p
    config = small_s16()
    config.data.crop_size = 32
    config.eval.batch_size = 8
    r = step_analysis.compile_step(config, devices, "eval", chip)
    assert (r["step"], r["chips"], r["hosts"], r["global_batch"], r["fits"]) == ("eval", 8, 2, 32, True)
    # The parameters and the running mean and variance of its BatchNorms: 2 x (3 x 2 x 64 + 4 x 2 x 128 + 512).
    assert r["argument_groups"]["parameters"] == 4 * (S_PARAMS + 3840)
    assert all(c["count"] == 0 for c in r["collectives"].values())
    forward = 2 * variants.flops("uniformer_small", 4, 32, 400)
    assert 0.9 < r["flops_per_chip"] / (4 * forward) < 1.2


def test_eval_step_that_does_not_fit():
    """eval.py's step on a v5e-4 (16 GiB a chip) with 1024 UniFormer-S clips a chip: reported, exit status 1."""
    result = cli("--config", "configs/k400_s16.py", "--topology", "v5e:2x2", "--step", "eval",
                 "--config.eval.batch_size=1024", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert (report["step"], report["chips"], report["hosts"], report["fits"]) == ("eval", 4, 1, False)
    assert report["global_batch"] == 1024 * 4  # videos x 4 clips x 1 crop
    assert report["hbm_bytes"] == 16 * 2 ** 30 < report["per_chip_bytes"]["total"]
    # 256 videos of 4 clips of 16 x 224 x 224 x 3 bytes on each chip.
    assert report["argument_groups"]["batch"] == 256 * 4 * 16 * 224 * 224 * 3


def test_bad_topology_is_one_error_line():
    result = cli("--config", "configs/k400_s16.py", "--topology", "v9:2x2")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith("error: ")
    assert "unknown TPU topology 'v9:2x2'" in result.stderr
    # A v5p host holds 2x2x1 chips: a 3x3x3 slice does not exist.
    with pytest.raises(step_analysis.AotError, match="libtpu cannot describe the topology 'v5p:3x3x3'"):
        step_analysis.topology("v5p:3x3x3")


def test_without_libtpu_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "libtpu", None)  # import libtpu now raises ImportError
    with pytest.raises(step_analysis.AotError, match=r"pip install -e '\.\[tpu\]'"):
        step_analysis.topology("v5p:2x2x2")


def test_batch_that_does_not_split_over_the_pod(v5p):
    with pytest.raises(step_analysis.AotError, match="train.batch_size 12 does not split over 8 devices"):
        step_analysis.train_program(small_s16(batch_size=12), v5p[0])


def test_fsdp_off_the_torus_axes_is_refused():
    """A v5p-128 is a 4x4x4 torus: 8 chips a parameter is no product of its axes."""
    devices, _ = step_analysis.topology("v5p:4x4x4")
    with pytest.raises(step_analysis.AotError, match="train.fsdp=8 does not map onto the physical axes of these 64"):
        step_analysis.train_program(small_s16(fsdp=8, batch_size=64), devices)


def test_pod_batch_and_candidates():
    """The paper's 80 clips of B16 (mixed in groups of 10) on 64 chips: 128 clips in groups of 8; on 256
    chips, 256. Candidates end with every block recomputed and the batch in micro-batches of a clip a chip."""
    config = k400_s16.get_config()
    config.train.update(batch_size=80, mix_group=10)
    assert aot.pod_batch(config, 64) == {"batch_size": 128, "mix_group": 8}
    assert aot.pod_batch(config, 256) == {"batch_size": 256, "mix_group": 8}
    config.train.update(batch_size=256, mix_group=8)
    options = aot.candidates(config, 64)
    assert options[0] == {"fsdp": 1, "remat": (0, 0, 0, 0), "accumulate": 1}
    assert options[1] == {"fsdp": 4, "remat": (0, 0, 0, 0), "accumulate": 1}
    assert options[-1] == {"fsdp": 4, "remat": (3, 4, 8, 3), "accumulate": 4}


def test_uniformerv2_candidates_recompute_its_blocks():
    """UniFormerV2's remat counts blocks (OpenGVLab's `checkpoint_num`): the search ends with all 24 of L/14."""
    from configs import k400_k710_v2_l14_32x336

    config = k400_k710_v2_l14_32x336.get_config()
    assert config.train.batch_size == 128 and config.train.remat == 24  # run.sh: 32 x 4 videos, every block
    options = aot.candidates(config, 64)
    assert options[0] == {"fsdp": 1, "remat": 0, "accumulate": 1}
    assert options[-1] == {"fsdp": 4, "remat": 24, "accumulate": 2}
    config.train.update(options[-1])
    assert "--config.train.remat=24 " in aot.override_flags(config)
