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

import json
import math
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from uniformer_jax import recipes
from uniformer_jax.models.uniformerv2 import SPECS
from uniformer_jax.models.variants import DEPTHS, is_v2
from uniformer_jax.step_analysis import AotError, Chip, GiB, compile_step, format_report, topology


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
    every, none = remat_choices(config.model.variant)
    out = [{"fsdp": 1, "remat": none, "accumulate": 1}, {"fsdp": fsdp, "remat": none, "accumulate": 1}]
    per_chip = t.batch_size // chips
    out += [{"fsdp": fsdp, "remat": every, "accumulate": a} for a in (1, 2, 4, 8, 16, 32)
            if a <= per_chip and per_chip % a == 0 and (t.batch_size // a) % t.mix_group == 0]
    return out


def remat_choices(variant: str) -> tuple:
    """`train.remat` recomputing every block, and none: a count of blocks for each stage (UniFormer), or of all
    blocks (UniFormerV2).

    Args:
      variant: the config's variant.

    Returns:
      (every block, no block).
    """
    if is_v2(variant):
        return SPECS[variant].layers, 0
    return tuple(DEPTHS[variant]), (0, 0, 0, 0)


def remat_text(remat) -> str:
    """`train.remat` as its flag's value: `2,2,6,2` or `24`."""
    return ",".join(map(str, remat)) if isinstance(remat, tuple | list) else str(remat)


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
    remat = remat_text(t.remat) if remat_text(t.remat).strip("0,") else "none"
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
            f"--config.train.fsdp={t.fsdp} --config.train.remat={remat_text(t.remat)} "
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
    remat = flags_["remat"]
    if not remat.strip("0,"):
        remat = "none"
    elif remat == remat_text(remat_choices(report["variant"])[0]):
        remat = "all"
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
        recipes.complete(config)
        if config.model.num_classes is None:
            raise AotError("the config takes its class count from the dataset: set --config.model.num_classes")
        devices, chip = topology(f.topology)
        if f.search:
            config, report = search(config, devices, chip, log=(lambda _: None) if f.json else print)
            report = {**report, "settings": override_flags(config)}
        else:
            report = compile_step(config, devices, f.step, chip)
    except (AotError, ValueError) as e:
        sys.exit(f"error: {e}")
    report = {"config": name, "topology": f.topology, "variant": config.model.variant, **report}
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
