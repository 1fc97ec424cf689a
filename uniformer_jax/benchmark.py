"""Inference speed of the JAX model against MMAction2's PyTorch UniFormer, same weights and input, one process.

    python -m uniformer_jax.benchmark [--variants uniformer_small,uniformer_base] [--frames 8,16] [--batch 1,8]

Prints clips/s for JAX (jit; float32 and bfloat16 compute) and PyTorch (eager; float32 and bfloat16 autocast),
the JAX/PyTorch ratios, JAX's compile time and the float32 logit difference. Needs the `test` extra.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from convert import keys
from convert.forms import read_state_dict
from uniformer_jax import create_model, torch_reference


def clips_per_second(run, batch: int, min_seconds: float) -> float:
    """Throughput over at least two timed calls and `min_seconds`, after one warm-up call."""
    run()
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < min_seconds:
        run()
        calls += 1
    return calls * batch / (time.perf_counter() - start)


def measure(variant: str, frames: int, batch: int, size: int, min_seconds: float) -> dict:
    import torch

    reference = torch_reference.build(variant)
    state_dict, _ = read_state_dict({"state_dict": reference.state_dict()}, "mmaction2")
    variables = keys.to_flax(state_dict)
    video = np.random.RandomState(0).randn(batch, frames, size, size, 3).astype(np.float32)
    x_torch = torch.from_numpy(video).permute(0, 4, 1, 2, 3).contiguous()

    def torch_run(dtype):
        def run():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                return reference.cls_head(reference.backbone(x_torch))
        return run

    row = {"model": variant.removeprefix("uniformer_"), "frames": frames, "batch": batch}
    x = jnp.asarray(video)
    for dtype in ("float32", "bfloat16"):
        model = create_model(variant, num_classes=400, ln_eps=1e-5, dtype=jnp.dtype(dtype))
        apply = jax.jit(model.apply)
        start = time.perf_counter()
        logits = np.asarray(apply(variables, x))
        row[f"compile_{dtype}_s"] = time.perf_counter() - start
        if dtype == "float32":
            row["max_abs_diff"] = float(np.abs(logits - torch_run("float32")().numpy()).max())
        row[f"jax_{dtype}"] = clips_per_second(lambda: apply(variables, x).block_until_ready(), batch, min_seconds)
        row[f"torch_{dtype}"] = clips_per_second(torch_run(dtype), batch, min_seconds)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="uniformer_small,uniformer_base")
    parser.add_argument("--frames", default="8,16")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--min-seconds", type=float, default=10.0, help="timing per measurement")
    args = parser.parse_args(argv)
    import torch

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} "
          f"({jax.default_backend()}), torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{args.size}x{args.size}")
    header = ("model", "frames", "batch", "jax f32", "torch f32", "ratio", "jax bf16", "torch bf16", "ratio",
              "compile f32 s", "max|dlogit|")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for variant in args.variants.split(","):
        for frames in map(int, args.frames.split(",")):
            for batch in map(int, args.batch.split(",")):
                r = measure(variant, frames, batch, args.size, args.min_seconds)
                cells = (r["model"], r["frames"], r["batch"], f"{r['jax_float32']:.2f}", f"{r['torch_float32']:.2f}",
                         f"{r['jax_float32'] / r['torch_float32']:.2f}", f"{r['jax_bfloat16']:.2f}",
                         f"{r['torch_bfloat16']:.2f}", f"{r['jax_bfloat16'] / r['torch_bfloat16']:.2f}",
                         f"{r['compile_float32_s']:.1f}", f"{r['max_abs_diff']:.1e}")
                print("| " + " | ".join(map(str, cells)) + " |", flush=True)


if __name__ == "__main__":
    main()
