"""A step compiled for a set of devices and what it needs there: per-chip memory, FLOPs, traffic, collectives.

train.py's and eval.py's exact steps (model, dtype, remat, optimiser state, `(data, fsdp)` mesh, shardings,
global batch) are built on abstract shapes, so no data or weights are needed; the devices may be a TPU
topology's that libtpu describes (`topology`), compiled for from any machine, or the run's own. The report
gives per-chip bytes against the chip's HBM, XLA's cost analysis, the collectives of the compiled program and a
roofline bound on the step time. `python -m uniformer_jax.aot` is the command line; train.py's dry run uses it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import jax
import jax.numpy as jnp
import optax

from uniformer_jax import evaluation, sharding, training
from uniformer_jax.models.variants import create_model
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
             "label": (jax.ShapeDtypeStruct((t.batch_size, config.model.num_classes), jnp.float32,
                                            sharding=batch_sharding) if config.data.multi_label else
                       jax.ShapeDtypeStruct(clip[:1], jnp.int32, sharding=batch_sharding))}
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
    step = evaluation.make_step(model, protocol.aggregate, protocol.compute_dtype, protocol.multi_label)
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
