"""CPU latency of exported files in their runtimes, against the JAX model and the original PyTorch code.

    python -m uniformer_jax.deploy_benchmark --sensex PATH/TO/UniFormer [--configs k400_xxs4_128,k400_s16]

For each config the original model is built with random weights (XXS/XS: Sense-X's own code, weights drawn by
`sensex.randomise`; S/B: MMAction2's port, `benchmarks.mmaction2`), its state dict converted as a release is, and
the conversion exported to StableHLO, ONNX and LiteRT (`python -m uniformer_jax.export`'s code, batch 1, float32).
Each runs on the same uint8 clip: the JAX model (jit), the StableHLO file in jax, the ONNX file in onnxruntime, the
LiteRT file in its interpreter (every runtime on all of the machine's cores), and PyTorch eager. It prints
milliseconds a clip, each against PyTorch's, the largest logit difference from the JAX model and the file sizes.
Needs torch (the `torch` or `test` extra) and the export runtimes (the `export` extra).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import platform
import tempfile
from pathlib import Path

import jax
import numpy as np

from uniformer_jax import exporting, runtimes
from uniformer_jax.benchmarks import mmaction2, sensex
from uniformer_jax.benchmarks.models import clips_per_second
from uniformer_jax.models import variants
from uniformer_jax.weights import conversion
from uniformer_jax.weights.checkpoints import load_directory

RUNTIMES = ("jax", "stablehlo", "onnx", "tflite", "torch")


def original(name: str, sensex_modules):
    """A config's original PyTorch model in eval mode, random weights, and how it is called on a float NCTHW clip.

    Args:
      name: a config of `configs/`.
      sensex_modules: Sense-X's light model modules (`sensex.load`).

    Returns:
      The config, the module and `forward(x)`.
    """
    import torch

    config = importlib.import_module(f"configs.{name}").get_config()
    variant = config.model.variant
    if variants.is_light(variant):
        model = sensex.build(sensex_modules, variant, config.model.num_classes, config.data.crop_size).eval()
        sensex.randomise(model, torch.Generator().manual_seed(0))
        return config, model, lambda x: model([x])
    torch.manual_seed(0)
    model = mmaction2.randomise_batch_stats(mmaction2.build(variant, config.model.num_classes), 0).eval()
    return config, model, lambda x: model.cls_head(model.backbone(x))


def measure(name: str, sensex_modules, min_seconds: float) -> dict:
    """One config: every runtime's milliseconds a clip, logit differences and file sizes.

    Args:
      name: a config of `configs/`.
      sensex_modules: Sense-X's light model modules.
      min_seconds: how long each runtime is timed at least.

    Returns:
      The row.
    """
    import torch

    config, model, forward = original(name, sensex_modules)
    frames, crop = config.data.num_frames, config.data.crop_size
    video = np.random.RandomState(0).randint(0, 256, (1, frames, crop, crop, 3)).astype(np.uint8)
    clips = torch.from_numpy(video)

    def torch_step():
        with torch.no_grad():
            return forward(((clips.float() / 255 - 0.45) / 0.225).permute(0, 4, 1, 2, 3).contiguous()).numpy()

    row = {"config": name, "frames": frames, "crop": crop, "ms": {}, "diff": {}, "mb": {}}
    # PyTorch is timed first: onnxruntime's and LiteRT's thread pools keep spinning after each call and, once they
    # exist, slow every later runtime on the same cores (torch on XXS 4x128 measured twice as slow after them).
    expected = torch_step()
    row["ms"]["torch"] = 1e3 / clips_per_second(torch_step, lambda out: out, 1, min_seconds)
    with tempfile.TemporaryDirectory() as tmp:
        # As each was released: Sense-X's state dict, MMAction2's {"state_dict": ...} with its `backbone.` keys.
        state = model.state_dict() if variants.is_light(config.model.variant) else {"state_dict": model.state_dict()}
        torch.save(state, Path(tmp) / "model.pth")
        directory = Path(tmp) / "converted"
        conversion.to_orbax(Path(tmp) / "model.pth", directory)
        jax_model, variables = load_directory(directory)
        step = jax.jit(exporting.clip_function(jax_model, variables))
        ours = np.asarray(step(video))
        row["diff"]["torch"] = float(np.abs(expected - ours).max())
        row["ms"]["jax"] = 1e3 / clips_per_second(lambda: step(video), jax.block_until_ready, 1, min_seconds)
        info = {"source": str(directory), "class_names": [], "sampling_rate": config.data.rate,
                "sampling_mode": config.data.mode}
        for fmt in exporting.FORMATS:
            path = Path(tmp) / f"model.{fmt}"
            exporting.export(str(directory), path, exporting.Target(fmt, batch=1, platforms=("cpu",)), frames, crop,
                             info)
            row["mb"][fmt] = path.stat().st_size / 2**20
            run = functools.partial(runtimes.load(path, threads=os.cpu_count())[0], video)
            row["diff"][fmt] = float(np.abs(np.asarray(run()) - ours).max())
            row["ms"][fmt] = 1e3 / clips_per_second(run, np.asarray, 1, min_seconds)
            del run  # its runtime's threads go before the next one is timed
    return row


def main(argv=None) -> int:
    """`python -m uniformer_jax.deploy_benchmark`: prints the table.

    Args:
      argv: the command line; None: `sys.argv`.

    Returns:
      The exit status, 0.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sensex", required=True, help="a clone of github.com/Sense-X/UniFormer")
    parser.add_argument("--configs", default="k400_xxs4_128,k400_xxs16_160,k400_s16")
    parser.add_argument("--min-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    import onnxruntime
    import torch

    modules = sensex.load(args.sensex)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; jax {jax.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          "batch 1, float32; ms a clip (× PyTorch eager's speed)")
    print("| config | frames × crop | JAX | StableHLO (jax) | ONNX (onnxruntime) | LiteRT | PyTorch eager | "
          "max Δlogit vs JAX (StableHLO / ONNX / LiteRT / PyTorch) | MB (StableHLO / ONNX / LiteRT) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        r = measure(name, modules, args.min_seconds)
        torch_ms = r["ms"]["torch"]
        cells = [f"{r['ms'][k]:.0f} ({torch_ms / r['ms'][k]:.2f}×)" for k in RUNTIMES[:-1]]
        diffs = " / ".join(f"{r['diff'][k]:.1e}" for k in RUNTIMES[1:])
        sizes = " / ".join(f"{r['mb'][k]:.0f}" for k in exporting.FORMATS)
        print(f"| {name} | {r['frames']} × {r['crop']}² | {' | '.join(cells)} | {torch_ms:.0f} | {diffs} | {sizes} |",
              flush=True)
    return 0
