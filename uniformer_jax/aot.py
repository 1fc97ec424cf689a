"""Ahead-of-time compilation of train.py's and eval.py's steps for a TPU pod, from a machine without TPUs.

    python -m uniformer_jax.aot --config configs/k400_b32.py --topology v5p:4x4x4 [--step eval] [--json]

compiles the exact step the run would execute (model, dtype, remat, optimiser state, `(data, fsdp)` mesh,
shardings, global batch) on abstract shapes, with libtpu (`pip install -e '.[tpu]'`) describing the pod, and
prints per-chip memory against the chip's HBM, FLOPs and HBM traffic per step, the collectives in the compiled
program and a roofline bound on the step time. `--search` finds the cheapest `train.fsdp`, `train.remat` and
per-chip batch (`train.accumulate`) that fit. Override config fields as in train.py: `--config.train.fsdp=4`.
"""

from __future__ import annotations

from uniformer_jax import console

console.quiet_startup()

import dataclasses
import json
import math
import os
import re
import sys

import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from ml_collections import config_flags

from uniformer_jax import evaluation, sharding, training
from uniformer_jax.models.variants import DEPTHS, create_model
from uniformer_jax.weights.checkpoints import abstract_variables

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    peak_flops: float  # bfloat16 matmul, per second
    hbm_bandwidth: float  # bytes per second
    hbm_bytes: int


# Per chip, from Google Cloud's TPU system architecture pages. v4 and v5p run as one device per chip (megacore).
CHIPS = {"v4": Chip("TPU v4", 275e12, 1.2e12, 32 * GiB), "v5e": Chip("TPU v5e", 197e12, 819e9, 16 * GiB),
         "v5p": Chip("TPU v5p", 459e12, 2.765e12, 95 * GiB), "v6e": Chip("TPU v6e", 918e12, 1.64e12, 32 * GiB)}
DEVICE_KINDS = {"TPU v4": "v4", "TPU v5 lite": "v5e", "TPU v5": "v5p", "TPU v5p": "v5p", "TPU v6 lite": "v6e"}
MEGACORE = ("v4", "v5p")
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4,
                "f64": 8, "s64": 8, "u64": 8}
_OP = re.compile(r"=\s*(?P<type>.+?)\s+(?P<op>" + "|".join(COLLECTIVES) + r")(?P<start>-start)?\(")
_SIZE = re.compile(r"required for HLO temporaries \((\d+(?:\.\d+)?)([KMGT]?)\)")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}  # XLA prints sizes in binary units
_ARRAY = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")


class AotError(ValueError):
    """A topology or config that cannot be compiled; the message says what to do."""


def topology(name: str) -> tuple[list, Chip]:
    """The devices of a TPU topology named as libtpu names them (`v5p:4x4x4`: generation, chips per axis).

    Args:
      name: `GENERATION:SHAPE`, e.g. `v5p:4x4x4`, `v4:4x4x4`, `v5e:16x16`.

    Returns:
      The topology's abstract devices and the chip's figures (peak FLOP/s, HBM bandwidth and size).

    Raises:
      AotError: an unknown generation or shape, or no libtpu (the `tpu` extra).
    """
    generation = name.split(":")[0]
    if generation not in CHIPS or ":" not in name:
        raise AotError(f"unknown TPU topology {name!r}: use GENERATION:SHAPE with a generation of "
                       f"{', '.join(CHIPS)} and chips per axis, e.g. v5p:4x4x4, v4:4x4x4, v5e:16x16")
    try:
        import libtpu  # noqa: F401  (only its presence is checked here; JAX loads it)
    except ImportError:
        raise AotError("compiling for TPUs needs libtpu: pip install -e '.[tpu]'") from None
    from jax.experimental import topologies

    # libtpu lets one process at a time own the TPUs of a host; compiling owns none, so several may run.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

    try:
        desc = topologies.get_topology_desc(topology_name=name, platform="tpu",
                                            chip_config_name="megacore" if generation in MEGACORE else "default")
    except jax.errors.JaxRuntimeError as e:
        raise AotError(f"libtpu cannot describe the topology {name!r}: {str(e).splitlines()[0]}") from None
    return list(desc.devices), CHIPS[generation]


def local_chip(devices) -> Chip | None:
    """The chip of devices at hand: a known TPU's figures, else its memory limit alone where JAX reports one.

    Args:
      devices: the run's devices.

    Returns:
      The `Chip`, or None where nothing is known of it.
    """
    kind = DEVICE_KINDS.get(devices[0].device_kind)
    if kind:
        return CHIPS[kind]
    stats = devices[0].memory_stats() or {}
    return Chip(devices[0].device_kind, 0.0, 0.0, stats["bytes_limit"]) if "bytes_limit" in stats else None


def _with_sharding(tree, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


def train_program(config, devices, model=None, recipe=None):
    """train.py's step for `devices` and its abstract arguments (state, batch).

    The schedule's length does not change the program's size, so one step an epoch stands in for the dataset's.

    Args:
      config: a train.py config.
      devices: the devices to compile for.
      model: the model; None: the config's.
      recipe: the recipe; None: the config's.

    Returns:
      (jitted step, abstract arguments, global batch in clips).
    """
    try:
        training.check_layout(config, len(devices))
    except ValueError as e:
        raise AotError(str(e)) from None
    t = config.train
    try:
        mesh = sharding.train_mesh(t.fsdp, devices)
    except ValueError as e:
        raise AotError(str(e)) from None
    jitted = training.jit_step(config, model or training.model_of(config),
                               recipe or training.recipe_of(config, 1), mesh)
    clip = (t.batch_size, config.data.num_frames, t.crop_size, t.crop_size, 3)
    batch_sharding = sharding.batch_sharding(mesh)
    batch = {"video": jax.ShapeDtypeStruct(clip, jnp.uint8, sharding=batch_sharding),
             "label": jax.ShapeDtypeStruct(clip[:1], jnp.int32, sharding=batch_sharding)}
    return jitted.step, (_with_sharding(jitted.abstract, jitted.sharding), batch), t.batch_size


def eval_program(config, devices):
    """eval.py's step for `devices` and its abstract arguments (variables, views).

    Args:
      config: an eval.py config.
      devices: the devices to compile for.

    Returns:
      (jitted step, abstract arguments, global batch in clips).
    """
    try:
        protocol = evaluation.Protocol.from_config(config)
    except evaluation.ConfigError as e:
        raise AotError(str(e)) from None
    videos = config.eval.batch_size
    if videos % len(devices):
        raise AotError(f"eval.batch_size {videos} does not split over {len(devices)} devices; set "
                       "--config.eval.batch_size to a multiple of it")
    mesh = sharding.data_mesh(devices)
    model = create_model(config.model.variant, num_classes=config.model.num_classes,
                         dtype=protocol.compute_dtype, attention=protocol.attention)
    step = evaluation.make_step(model, protocol.aggregate, protocol.compute_dtype)
    variables = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding.replicated(mesh)),
                             abstract_variables(model))
    views = protocol.views.clips * protocol.views.crops
    size = protocol.views.crop_size
    video = jax.ShapeDtypeStruct((videos, views, protocol.sampling.num_frames, size, size, 3), jnp.uint8,
                                 sharding=sharding.batch_sharding(mesh))
    return step, (variables, video), videos * views


def collectives(hlo: str) -> dict:
    """The cross-device ops of compiled HLO text.

    Bytes are each op's result (for an async `-start` op, its output, the last array of its tuple). A loop body's
    ops are counted once.

    Args:
      hlo: the compiled program's text (`compiled.as_text()`).

    Returns:
      `{op: {"count", "bytes"}}` for all-gather, reduce-scatter, all-reduce, all-to-all and collective-permute.
    """
    found = {op: {"count": 0, "bytes": 0} for op in COLLECTIVES}
    for line in hlo.splitlines():
        m = _OP.search(line)
        if not m:
            continue
        arrays = [(_DTYPE_BYTES[d], math.prod(int(n) for n in dims.split(",") if n))
                  for d, dims in _ARRAY.findall(m["type"])]
        if m["start"] and m["op"] != "all-reduce":  # (operands..., outputs..., contexts): the outputs
            arrays = arrays[len(arrays) // 2:] if m["op"] == "all-gather" else arrays[1:2]
        found[m["op"]]["count"] += 1
        found[m["op"]]["bytes"] += sum(size * n for size, n in arrays)
    return found


def argument_bytes(args) -> dict:
    """Per-chip bytes of each argument group as its sharding splits it (before the chip's padding).

    Args:
      args: the abstract arguments, grouped (parameters, optimiser state, batch, ...).

    Returns:
      `{group: bytes}`.
    """
    def shard_bytes(tree):
        return sum(math.prod(a.sharding.shard_shape(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(tree))

    state, second = args
    if isinstance(state, training.TrainState):
        return {"parameters": shard_bytes(state.params), "optimiser_state": shard_bytes(state.opt_state),
                "batch_stats": shard_bytes(state.batch_stats), "batch": shard_bytes(second)}
    return {"parameters": shard_bytes(state), "batch": shard_bytes(second)}


def _cost(compiled) -> tuple[float, float]:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))


def with_micro_batches(cost: tuple[float, float], config, state) -> tuple[float, float]:
    """A step's FLOPs and memory traffic with `accumulate` micro-batches.

    XLA's cost analysis counts a loop's body once: the total is the optimiser update's (outside the loop; compiled
    alone to measure it) plus `accumulate` times the rest.

    Args:
      cost: (FLOPs, bytes) as XLA counted them.
      config: the train.py config.
      state: the abstract train state.

    Returns:
      (FLOPs, bytes) per step.
    """
    tx = training.recipe_of(config, 1).optimizer()
    update = jax.jit(lambda s: optax.apply_updates(s.params, tx.update(s.params, s.opt_state, s.params)[0]))
    once = _cost(update.lower(state).compile())
    n = config.train.accumulate
    return tuple(u + n * (total - u) for u, total in zip(once, cost, strict=True))


def _header(devices, chip: Chip | None, global_batch: int) -> dict:
    return {"chip": chip.name if chip else devices[0].device_kind, "chips": len(devices),
            "hosts": len({d.process_index for d in devices}), "global_batch": global_batch,
            "hbm_bytes": chip.hbm_bytes if chip else None}


def analyse(compiled, args, devices, chip: Chip | None, global_batch: int, cost=None) -> dict:
    """The report of one compiled step: memory, cost, collectives and roofline, per chip.

    Args:
      compiled: the compiled step.
      args: its abstract arguments.
      devices: the devices it was compiled for.
      chip: their figures, or None.
      global_batch: clips per step.
      cost: (FLOPs, bytes) where not the compiler's own count; None: XLA's.

    Returns:
      The report (see `format_report` for its fields).
    """
    memory = compiled.memory_analysis()
    parts = {"arguments": memory.argument_size_in_bytes, "outputs": memory.output_size_in_bytes,
             "aliased": memory.alias_size_in_bytes, "temporaries": memory.temp_size_in_bytes,
             "code": memory.generated_code_size_in_bytes}
    # Donated arguments are overwritten by outputs: those bytes are counted once.
    total = parts["arguments"] + parts["outputs"] - parts["aliased"] + parts["temporaries"] + parts["code"]
    flops, traffic = cost or _cost(compiled)
    bound = max(flops / chip.peak_flops, traffic / chip.hbm_bandwidth) if chip and chip.peak_flops else None
    return {**_header(devices, chip, global_batch), "per_chip_bytes": {**parts, "total": total},
            "argument_groups": argument_bytes(args), "fits": total <= chip.hbm_bytes if chip else None,
            "flops_per_chip": flops, "hbm_traffic_per_chip": traffic,
            "collectives": collectives(compiled.as_text()),
            "step_seconds_lower_bound": bound, "clips_per_second_upper_bound": global_batch / bound if bound else None}


def exhausted(message: str, args, devices, chip: Chip | None, global_batch: int) -> dict:
    """The report of a step the TPU compiler refused for want of memory: what it said it needed.

    Args:
      message: the compiler's error.
      args: the step's abstract arguments.
      devices: the devices it was compiled for.
      chip: their figures, or None.
      global_batch: clips per step.

    Returns:
      The report, `fits` False.
    """
    needed = _SIZE.search(message)
    temporaries = int(float(needed[1]) * _UNITS[needed[2]]) if needed else None
    groups = argument_bytes(args)
    arguments = sum(groups.values())
    return {**_header(devices, chip, global_batch),
            "per_chip_bytes": {"arguments": arguments, "outputs": None, "aliased": None, "temporaries": temporaries,
                               "code": None, "total": arguments + (temporaries or 0)},
            "argument_groups": groups, "fits": False,
            "compiler": message, "flops_per_chip": None, "hbm_traffic_per_chip": None, "collectives": None,
            "step_seconds_lower_bound": None, "clips_per_second_upper_bound": None}


def compile_step(config, devices, step: str = "train", chip: Chip | None = None, model=None, recipe=None) -> dict:
    """A step compiled for `devices` and analysed.

    Args:
      config: a train.py or eval.py config.
      devices: the devices to compile for.
      step: `train` or `eval`.
      chip: the devices' figures, or None.
      model: as `train_program`'s.
      recipe: as `train_program`'s.

    Returns:
      The report: chips, hosts, per-chip bytes against HBM, FLOPs, traffic, collectives, roofline.
    """
    if step == "train":
        fn, args, global_batch = train_program(config, devices, model, recipe)
    else:
        fn, args, global_batch = eval_program(config, devices)
    try:
        compiled = fn.lower(*args).compile()
    except jax.errors.JaxRuntimeError as e:
        message = str(e).splitlines()[0]
        if "RESOURCE_EXHAUSTED" not in message:
            raise AotError(f"the {step} step does not compile: {message}") from None
        return {"step": step, **exhausted(message, args, devices, chip, global_batch)}
    cost = _cost(compiled)
    if step == "train" and config.train.accumulate > 1:
        cost = with_micro_batches(cost, config, args[0])
    return {"step": step, **analyse(compiled, args, devices, chip, global_batch, cost)}


def candidates(config, chips: int) -> list[dict]:
    """Settings to try, from cheapest to most frugal.

    Parameters sharded over 4 chips (a torus axis of v4/v5p slices; costs gathers), then every block recomputed in
    the backward pass (a third more FLOPs), then the batch in more micro-batches (fewer clips a chip at a time).

    Args:
      config: a train.py config at the pod's batch.
      chips: the pod's chip count.

    Returns:
      Override dicts of `config.train`, the first one empty.
    """
    t = config.train
    fsdp = math.gcd(4, chips)
    every = tuple(DEPTHS[config.model.variant])
    out = [{"fsdp": 1, "remat": (0, 0, 0, 0), "accumulate": 1}, {"fsdp": fsdp, "remat": (0, 0, 0, 0), "accumulate": 1}]
    per_chip = t.batch_size // chips
    out += [{"fsdp": fsdp, "remat": every, "accumulate": a} for a in (1, 2, 4, 8, 16, 32)
            if a <= per_chip and per_chip % a == 0 and (t.batch_size // a) % t.mix_group == 0]
    return out


def pod_batch(config, chips: int) -> dict:
    """The train settings of the paper's recipe on a pod.

    The paper's global batch where it splits over the chips, else the next multiple of the chip count (the learning
    rate scales with it), mixed in the largest groups up to the original's that divide it.

    Args:
      config: a train.py config.
      chips: the pod's chip count.

    Returns:
      Overrides of `config.train`: `batch_size`, `lr`, `mix_group`.
    """
    t = config.train
    batch = chips * math.ceil(t.batch_size / chips)
    group = max(g for g in range(1, t.mix_group + 1) if batch % g == 0)
    return {"batch_size": batch, "mix_group": group}


def describe_settings(config, chips: int) -> str:
    """A config's memory settings in words, for the search's log.

    Args:
      config: a train.py config.
      chips: the pod's chip count.

    Returns:
      One line: batch, mixing group, fsdp, remat and micro-batches.
    """
    t = config.train
    remat = ",".join(map(str, t.remat)) if any(t.remat) else "none"
    return (f"batch {t.batch_size} (mix_group {t.mix_group}), fsdp {t.fsdp}, remat {remat}, accumulate "
            f"{t.accumulate}: {t.batch_size // t.accumulate // chips} clip(s) a chip at a time")


def override_flags(config) -> str:
    """A config's memory settings as train.py flags.

    Args:
      config: a train.py config.

    Returns:
      `--config.train.batch_size=... --config.train.fsdp=...` and the rest.
    """
    t = config.train
    return (f"--config.train.batch_size={t.batch_size} --config.train.mix_group={t.mix_group} "
            f"--config.train.fsdp={t.fsdp} --config.train.remat={','.join(map(str, t.remat))} "
            f"--config.train.accumulate={t.accumulate}")


def search(config, devices, chip: Chip, log=print) -> tuple[object, dict]:
    """Compiles `candidates` in turn at the pod's batch until one fits.

    Args:
      config: a train.py config.
      devices: the pod's devices (`topology`).
      chip: their figures.
      log: called with one line a try.

    Returns:
      The config that fits and its report; where none fits, the last one tried, whose report says fits false.
    """
    config = config.copy_and_resolve_references()
    config.unlock()
    config.train.update(pod_batch(config, len(devices)))
    report = None
    for choice in candidates(config, len(devices)):
        config.train.update(choice)
        report = compile_step(config, devices, "train", chip)
        log(f"{describe_settings(config, len(devices))}: {report['per_chip_bytes']['total'] / GiB:.2f} GiB of "
            f"{chip.hbm_bytes / GiB:.0f} GiB, {'fits' if report['fits'] else 'does not fit'}")
        if report["fits"]:
            break
    return config, report


def _bytes(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / 2 ** 20:.1f} MiB"


def format_report(r: dict, title: str) -> str:
    """A report as text for a person.

    Args:
      r: what `compile_step` or `search` returned.
      title: the first line.

    Returns:
      The lines, joined.
    """
    b, groups = r["per_chip_bytes"], r["argument_groups"]
    unit = "chip" if r["chip"].startswith("TPU") else "device"
    lines = [f"{title}: {r['chips']} {unit}{'s' if r['chips'] > 1 else ''} ({r['chip']}) on {r['hosts']} host(s), "
             f"global batch {r['global_batch']} clips ({r['global_batch'] / r['chips']:g} a {unit})",
             f"per {unit}: arguments " + _bytes(b["arguments"]) + " (" + ", ".join(
                 f"{k.replace('_', ' ')} {_bytes(v)}" for k, v in groups.items()) + ")"]
    if "compiler" in r:
        lines[-1] += f"; the compiler refused the step: {r['compiler']}"
        lines.append(f"total at least {_bytes(b['total'])} of {_bytes(r['hbm_bytes'])} HBM: DOES NOT FIT")
        return "\n".join(lines)
    lines[-1] += (f", outputs {_bytes(b['outputs'])} ({_bytes(b['aliased'])} of them in donated arguments), "
                  f"temporaries {_bytes(b['temporaries'])}, code {_bytes(b['code'])}")
    if r["hbm_bytes"]:
        lines.append(f"total {_bytes(b['total'])} of {_bytes(r['hbm_bytes'])} HBM: "
                     + ("fits" if r["fits"] else "DOES NOT FIT"))
    else:
        lines.append(f"total {_bytes(b['total'])} (no memory limit known for {r['chip']})")
    lines.append(f"per step and chip: {r['flops_per_chip'] / 1e9:.1f} GFLOP, "
                 f"{r['hbm_traffic_per_chip'] / 1e9:.2f} GB of memory traffic")
    found = [f"{op} x{c['count']} ({_bytes(c['bytes'])})" for op, c in r["collectives"].items() if c["count"]]
    lines.append("collectives: " + (", ".join(found) if found else "none"))
    if r["step_seconds_lower_bound"]:
        lines.append(f"roofline: a step takes at least {r['step_seconds_lower_bound'] * 1e3:.2f} ms, at most "
                     f"{r['clips_per_second_upper_bound']:.0f} clips/s for the whole pod")
    return "\n".join(lines)


def table_row(report: dict, paper_batch: int) -> str:
    """A search's result as a row of BENCHMARKS.md's pod table.

    Args:
      report: what `search` returned, with `config`, `topology` and `settings`.
      paper_batch: the config's own global batch.

    Returns:
      The Markdown row.
    """
    flags_ = dict(f.removeprefix("--config.train.").split("=") for f in report["settings"].split())
    batch = flags_["batch_size"] + ("" if int(flags_["batch_size"]) == paper_batch else f" (paper {paper_batch})")
    remat = "none" if set(flags_["remat"].split(",")) == {"0"} else "all"
    clips = report["clips_per_second_upper_bound"]
    return (f"| {os.path.basename(report['config']).removesuffix('.py')} | {report['topology']} | {batch} | "
            f"{flags_['fsdp']} | {remat} | {flags_['accumulate']} | "
            f"{int(flags_['batch_size']) // int(flags_['accumulate']) // report['chips']} | "
            f"{report['per_chip_bytes']['total'] / GiB:.1f} | {'yes' if report['fits'] else 'no'} | "
            f"{f'{clips:.0f}' if clips else '–'} |")


def define_flags() -> None:
    """The command line's flags, defined only when this module runs as a program (train.py imports it)."""
    config_flags.DEFINE_config_file("config", None, "a config file from configs/", lock_config=True)
    flags.DEFINE_string("topology", None, "a TPU topology, GENERATION:SHAPE, e.g. v5p:4x4x4 (64 chips), v4:4x4x4 "
                        "(64 chips), v5e:16x16 (256 chips)")
    flags.DEFINE_enum("step", "train", ["train", "eval"], "which program to compile")
    flags.DEFINE_bool("json", False, "print the report as one JSON object")
    flags.DEFINE_bool("search", False, "find train settings that fit at the pod's batch (instead of --step)")
    flags.mark_flags_as_required(["config", "topology"])


def main(argv):
    """`python -m uniformer_jax.aot`: compile, report, exit 1 where the step does not fit.

    Args:
      argv: the command line after absl's flags (unused).
    """
    del argv
    console.quiet_logging()
    f = flags.FLAGS
    config, name = f.config, f["config"].config_filename
    title = f"{os.path.basename(name).removesuffix('.py')} {'train' if f.search else f.step} step on {f.topology}"
    try:
        devices, chip = topology(f.topology)
        if f.search:
            config, report = search(config, devices, chip, log=(lambda _: None) if f.json else print)
            report = {**report, "settings": override_flags(config)}
        else:
            report = compile_step(config, devices, f.step, chip)
    except AotError as e:
        sys.exit(f"error: {e}")
    report = {"config": name, "topology": f.topology, **report}
    if f.json:
        print(json.dumps(report))
    else:
        print(format_report(report, title))
        if f.search:
            print(("settings: " if report["fits"] else "nothing tried fits; the most frugal: ") + report["settings"])
            print(table_row(report, f.config.train.batch_size))
    if report["fits"] is False:
        sys.exit(1)  # so that a launch script can stop here


if __name__ == "__main__":
    define_flags()
    app.run(main)
