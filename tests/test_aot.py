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
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import k400_s16
from uniformer_jax import aot, sharding, variants

S_PARAMS = 21_400_400  # UniFormer-S with a 400-class head (uniformer-spec §2)


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
    return aot.topology("v5p:2x2x2")


def test_train_step_sharded_over_a_pod_slice(v5p):
    devices, chip = v5p
    assert (len(devices), len({d.process_index for d in devices})) == (8, 2)
    reports, hlo = {}, {}
    for fsdp in (1, 2):  # 2 clips a chip; with fsdp=2 in 2 micro-batches of 1
        config = small_s16(fsdp=fsdp, accumulate=fsdp, batch_size=16, mix_group=8)
        fn, args, batch = aot.train_program(config, devices)
        compiled = fn.lower(*args).compile()
        cost = aot.with_micro_batches(aot._cost(compiled), config, args[0]) if fsdp == 2 else None
        reports[fsdp] = aot.analyse(compiled, args, devices, chip, batch, cost)
        hlo[fsdp] = compiled.as_text()
    one, two = reports[1], reports[2]
    # Replicated, each chip holds the whole model in float32, and AdamW's two moments beside it.
    assert one["argument_groups"]["parameters"] == 4 * S_PARAMS
    assert one["argument_groups"]["optimiser_state"] >= 2 * 4 * S_PARAMS
    for r in (one, two):
        b = r["per_chip_bytes"]
        assert b["total"] == b["arguments"] + b["outputs"] - b["aliased"] + b["temporaries"] + b["code"]
        assert b["arguments"] >= sum(r["argument_groups"].values())  # the compiler's count, with its padding
        assert b["aliased"] >= r["argument_groups"]["parameters"]  # the donated state is updated in place
        assert r["fits"] and b["total"] < r["hbm_bytes"] == 95 * 2 ** 30
        # Train FLOPs are about 3x the forward pass (2 FLOPs a multiply-add, as fvcore counts them, spec §5),
        # for 2 clips a chip: in one pass or in 2 micro-batches, whose loop XLA's cost analysis counts once.
        forward = 2 * variants.flops("uniformer_small", 4, 32, 400)
        assert 0.8 < r["flops_per_chip"] / (2 * 3 * forward) < 1.6
        assert r["step_seconds_lower_bound"] > 0 and r["clips_per_second_upper_bound"] > 0
    # fsdp=2 halves the arrays of 2^18 elements and more (most of the model); the small ones stay whole.
    assert 1.6 < one["per_chip_bytes"]["arguments"] / two["per_chip_bytes"]["arguments"] <= 2.0
    # Replicated parameters need no gathering, their gradients are summed; split ones are gathered whole.
    assert one["collectives"]["all-gather"]["count"] == 0 and one["collectives"]["all-reduce"]["count"] > 0
    assert two["collectives"]["all-gather"]["count"] > 0
    # The depthwise convolutions compile as TPU grouped convolutions, not the CPU's shift-and-add form.
    for text in hlo.values():
        assert "feature_group_count=64" in text and "feature_group_count=128" in text


def test_collectives_counted_with_their_bytes(v5p):
    """A gather of a (8, 1024) float32 array and a sum over its rows: 32 KiB and 4 KiB, one op each."""
    devices, _ = v5p
    mesh = sharding.data_mesh(devices)
    x = jax.ShapeDtypeStruct((8, 1024), jnp.float32, sharding=NamedSharding(mesh, P("data")))
    whole = NamedSharding(mesh, P())
    fn = jax.jit(lambda x: (x * 2, x.sum(0)), out_shardings=(whole, whole))
    found = aot.collectives(fn.lower(x).compile().as_text())
    assert found["all-gather"] == {"count": 1, "bytes": 8 * 1024 * 4}
    assert found["all-reduce"] == {"count": 1, "bytes": 1024 * 4}
    assert found["reduce-scatter"]["count"] == found["all-to-all"]["count"] == 0


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


@pytest.mark.parametrize("topology, message", [
    ("v9:2x2", "unknown TPU topology 'v9:2x2'"),
    ("v5p:3x3x3", "libtpu cannot describe the topology 'v5p:3x3x3'"),
])
def test_bad_topology_is_one_error_line(topology, message):
    result = cli("--config", "configs/k400_s16.py", "--topology", topology)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith("error: ")
    assert message in result.stderr


def test_without_libtpu_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "libtpu", None)  # import libtpu now raises ImportError
    with pytest.raises(aot.AotError, match=r"pip install -e '\.\[tpu\]'"):
        aot.topology("v5p:2x2x2")


def test_batch_that_does_not_split_over_the_pod(v5p):
    with pytest.raises(aot.AotError, match="train.batch_size 12 does not split over 8 devices"):
        aot.train_program(small_s16(batch_size=12), v5p[0])


def test_fsdp_off_the_torus_axes_is_refused():
    """A v5p-128 is a 4x4x4 torus: 8 chips a parameter is no product of its axes."""
    devices, _ = aot.topology("v5p:4x4x4")
    with pytest.raises(aot.AotError, match="train.fsdp=8 does not map onto the physical axes of these 64"):
        aot.train_program(small_s16(fsdp=8, batch_size=64), devices)


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
