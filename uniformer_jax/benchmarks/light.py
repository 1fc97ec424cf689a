"""Inference speed of UniFormer-XXS/XS in JAX against Sense-X's own PyTorch code, on one device, in one process.

    python -m uniformer_jax.light_benchmark --sensex PATH/TO/UniFormer [--configs k400_xxs16_160,k400_xs32_192]

For each config (its variant, frames and crop) the original model is built with random weights
(`benchmarks.sensex.randomise`), its state dict
converted as a release is, and both run float32 eval-mode inference (pruning on) on the same uint8 clips, normalised
inside the step: it prints clips/s of JAX (jit) and of PyTorch eager, their ratio, the model's GFLOPs per clip
and the largest logit difference. PATH/TO/UniFormer is a clone of github.com/Sense-X/UniFormer
(`uniformer_jax.benchmarks.sensex`). Needs torch (the `torch` or `test` extra).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import tempfile
from pathlib import Path

import jax
import numpy as np

from uniformer_jax.benchmarks import sensex
from uniformer_jax.benchmarks.models import clips_per_second
from uniformer_jax.models import variants
from uniformer_jax.models.layers import normalise
from uniformer_jax.weights import conversion
from uniformer_jax.weights.checkpoints import load_directory


def measure(modules, name: str, batch: int, min_seconds: float) -> dict:
    """One config's original model and its conversion, timed on the same clips.

    Args:
      modules: Sense-X's light model modules (`sensex.load`).
      name: a config of `configs/` (`k400_xxs16_160`), read from the checkout.
      batch: clips a call.
      min_seconds: how long each side is timed at least.

    Returns:
      The row: variant, frames, crop, GFLOPs, clips/s of JAX and PyTorch, their ratio, the largest logit difference.
    """
    import torch

    config = importlib.import_module(f"configs.{name}").get_config()
    variant, frames, crop = config.model.variant, config.data.num_frames, config.data.crop_size
    original = sensex.build(modules, variant, config.model.num_classes, crop).eval()
    sensex.randomise(original, torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(original.state_dict(), Path(tmp) / "model.pth")
        conversion.to_orbax(Path(tmp) / "model.pth", Path(tmp) / "converted")
        model, variables = load_directory(Path(tmp) / "converted")
    video = np.random.RandomState(0).randint(0, 256, (batch, frames, crop, crop, 3)).astype(np.uint8)
    step = jax.jit(lambda v, x: model.apply(v, normalise(x)))
    ours = np.asarray(step(variables, video))
    clips = torch.from_numpy(video)

    def torch_step():
        with torch.no_grad():
            x = ((clips.float() / 255 - 0.45) / 0.225).permute(0, 4, 1, 2, 3).contiguous()
            return original([x])

    theirs = torch_step().numpy()
    jax_rate = clips_per_second(lambda: step(variables, video), jax.block_until_ready, batch, min_seconds)
    torch_rate = clips_per_second(torch_step, lambda out: out, batch, min_seconds)
    return {"config": name, "variant": variant, "frames": frames, "crop": crop,
            "gflops": variants.flops(variant, frames, crop) / 1e9, "jax": jax_rate, "torch": torch_rate,
            "ratio": jax_rate / torch_rate, "max_dlogit": float(np.abs(ours - theirs).max())}


def main(argv=None) -> int:
    """`python -m uniformer_jax.light_benchmark`: prints the table.

    Args:
      argv: the command line; None: `sys.argv`.

    Returns:
      The exit status, 0.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sensex", required=True, help="a clone of github.com/Sense-X/UniFormer")
    parser.add_argument("--configs", default="k400_xxs4_128,k400_xxs16_160,k400_xs32_192")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--min-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    import torch

    modules = sensex.load(args.sensex)
    print(f"# {platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}; jax {jax.__version__}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} torch threads; batch {args.batch}, float32")
    print("| config | variant | frames × crop | GFLOPs | jax clips/s | torch clips/s | jax/torch | max Δlogit |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        r = measure(modules, name, args.batch, args.min_seconds)
        print(f"| {r['config']} | {r['variant']} | {r['frames']} × {r['crop']}² | {r['gflops']:.2f} | "
              f"{r['jax']:.2f} | {r['torch']:.2f} | {r['ratio']:.2f} | {r['max_dlogit']:.1e} |", flush=True)
    return 0

