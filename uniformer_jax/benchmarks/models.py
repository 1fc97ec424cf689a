"""Speed of the JAX model against MMAction2's PyTorch UniFormer, on one device, in one process.

    python -m uniformer_jax.benchmark [--models s16,b16,b32] [--batch 8] [--train-batch 8]

A model is `s` or `b` and a frame count (`b32`: UniFormer-B on 32 frames). For each model, dtype and step
(inference, or a train step: forward, loss, backward, clipping, AdamW) it times JAX (jit), PyTorch eager
(bfloat16 through autocast) and `torch.compile` on the same weights and the same uint8 clips, normalised inside
the step, and prints clips/s, the JAX/PyTorch ratios, model FLOPs utilisation against the device's peak, peak
device memory and compile times. Float32 runs as each framework runs it by default on the device, with TF32
matrix units allowed for PyTorch on GPUs, as JAX does. Needs jax, flax, optax, torch and MMAction2 (the `test`
extra), not TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from uniformer_jax import mixing, training
from uniformer_jax.benchmarks import mmaction2
from uniformer_jax.models.layers import MEAN, STD, normalise
from uniformer_jax.models.uniformer import DEPTHS, flops
from uniformer_jax.models.variants import create_model
from uniformer_jax.weights import torch_keys as keys
from uniformer_jax.weights.torch_files import read_state_dict

NUM_CLASSES = 400
SMOOTHING = 0.1
DROP_PATH = 0.1
# Dense TFLOP/s of a device for (float32 as the frameworks run it: TF32 on GPUs, bfloat16), from the datasheets.
PEAK_TFLOPS = {
    "H100 PCIe": (378.0, 756.0),
    "H100": (494.7, 989.4),
    "H200": (494.7, 989.4),
    "A100": (156.0, 312.0),
}
MODEL_NAMES = {"s": "uniformer_small", "b": "uniformer_base"}


class UsageError(Exception):
    pass


def parse_model(spec: str) -> tuple[str, int]:
    """A model of the command line: `s` or `b` and a frame count.

    Args:
      spec: e.g. `b32`.

    Returns:
      (variant, frames).

    Raises:
      UsageError: anything else.
    """
    match = re.fullmatch(r"([sb])(\d+)", spec)
    if not match or int(match[2]) % 2:
        raise UsageError(f"model {spec!r}: write s or b and an even frame count, e.g. s16 or b32")
    return MODEL_NAMES[match[1]], int(match[2])


def clips_per_second(run, sync, batch: int, min_seconds: float) -> float:
    """Throughput over at least two timed calls and `min_seconds`, after one warm-up call.

    Args:
      run: one call of the step.
      sync: waits for `run`'s result (e.g. `jax.block_until_ready`).
      batch: clips a call.
      min_seconds: the least time measured.

    Returns:
      Clips per second.
    """
    sync(run())
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < min_seconds:
        out = run()
        calls += 1
    sync(out)
    return calls * batch / (time.perf_counter() - start)


def measured_peak_tflops(torch, device) -> tuple[float, float]:
    """The device's peak without a datasheet figure (CPUs): the best of PyTorch's 4096^3 matmuls.

    Args:
      torch: the torch module.
      device: the torch device.

    Returns:
      TFLOP/s in float32 and bfloat16.
    """
    peaks = []
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(4096, 4096, device=device).to(dtype)
        best = 0.0
        for _ in range(3):
            start = time.perf_counter()
            (a @ a).sum().item()
            best = max(best, 2 * 4096 ** 3 / (time.perf_counter() - start) / 1e12)
        peaks.append(best)
    return peaks[0], peaks[1]


class Torch:
    """MMAction2's UniFormer as one device runs it: eager or torch.compile'd, inference or a train step."""

    def __init__(self, variant: str, device):
        import torch

        self.torch, self.device = torch, device
        self.reference = mmaction2.build(variant, NUM_CLASSES, drop_path_rate=DROP_PATH).to(device)

    def sync(self, out):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
        return out

    def state_dict(self):
        return {k: v.detach().cpu() for k, v in self.reference.state_dict().items()}

    def forward(self, compiled: bool):
        """The network on uint8 clips (B, T, H, W, 3), normalised and made NCTHW as MMAction2's preprocessor does."""
        model = self.reference

        def net(video):
            x = ((video.float() - MEAN) / STD).permute(0, 4, 1, 2, 3)
            return model.cls_head(model.backbone(x))
        if not compiled:
            return net
        self.torch._dynamo.reset()  # a fresh compile for each measurement, not a cached or recompile-capped one
        return self.torch.compile(net)

    def autocast(self, dtype: str):
        return self.torch.autocast(self.device.type, dtype=self.torch.bfloat16, enabled=dtype == "bfloat16")

    def inference(self, dtype: str, compiled: bool, video):
        torch, net = self.torch, self.forward(compiled)
        self.reference.eval()
        x = torch.from_numpy(video).to(self.device)

        def run():
            with torch.no_grad(), self.autocast(dtype):
                return net(x)
        return run

    def train_step(self, dtype: str, compiled: bool, video, labels):
        torch, net = self.torch, self.forward(compiled)
        self.reference.train()
        params = [p for p in self.reference.parameters() if p.requires_grad]
        opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": 0.05},
                                 {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}], lr=1e-5)
        x, y = torch.from_numpy(video).to(self.device), torch.from_numpy(labels).long().to(self.device)

        def run():
            with self.autocast(dtype):
                logits = net(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y, label_smoothing=SMOOTHING)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 20.0)
            opt.step()
            return loss
        return run

    def peak_memory(self, run) -> float | None:
        """Peak bytes allocated over one call; PyTorch's CPU allocator keeps no such count."""
        if self.device.type != "cuda":
            return None
        self.torch.cuda.reset_peak_memory_stats()
        self.sync(run())
        return self.torch.cuda.max_memory_allocated()


def compile_timed(fn, *args):
    """A jitted function compiled, with its compile time and memory.

    Args:
      fn: a jitted function.
      *args: its arguments.

    Returns:
      The compiled function, seconds to lower and compile it, and what XLA's buffer assignment allocates for one
      call (arguments, outputs and temporaries).
    """
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    seconds = time.perf_counter() - start
    m = compiled.memory_analysis()
    return compiled, seconds, (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                               - m.alias_size_in_bytes)


def jax_inference(variant: str, dtype: str, variables, video, attention: str):
    """The JAX model's inference on uint8 clips, compiled.

    Args:
      variant: `uniformer_small` or `uniformer_base`.
      dtype: `float32` or `bfloat16`.
      variables: the converted weights.
      video: uint8 clips.
      attention: `xla` or `cudnn`.

    Returns:
      (a call, compile seconds, bytes).
    """
    model = create_model(variant, num_classes=NUM_CLASSES, ln_eps=1e-5, dtype=jnp.dtype(dtype), attention=attention)
    compiled, seconds, memory = compile_timed(jax.jit(lambda v, x: model.apply(v, normalise(x, model.dtype))),
                                              variables, video)
    return (lambda: compiled(variables, video)), seconds, memory


def jax_train_step(variant: str, dtype: str, variables, video, labels, attention: str, remat):
    """train.py's step (label smoothing, drop path, AdamW) on uint8 clips, compiled.

    Args:
      variant: `uniformer_small` or `uniformer_base`.
      dtype: `float32` or `bfloat16`.
      variables: the converted weights.
      video: uint8 clips.
      labels: their labels.
      attention: `xla` or `cudnn`.
      remat: leading blocks of each stage to recompute.

    Returns:
      (a call returning the loss, compile seconds, bytes).
    """
    model = create_model(variant, num_classes=NUM_CLASSES, ln_eps=1e-5, dtype=jnp.dtype(dtype), attention=attention,
                         drop_path_rate=DROP_PATH, remat=remat)
    recipe = training.Recipe(lr=1e-5, reference_batch=1, batch_size=1, total_steps=1000, warmup_steps=0)
    settings = mixing.Mixing(mixup=0.0, cutmix=0.0, smoothing=SMOOTHING, group=video.shape[0])
    tx = recipe.optimizer()
    step = jax.jit(training.make_train_step(model, tx, recipe.schedule(), settings, dtype=model.dtype),
                   donate_argnums=0)
    state = training.init_state(jax.tree.map(jnp.array, variables), tx, seed=0)
    batch = {"video": video, "label": labels}
    compiled, seconds, memory = compile_timed(step, state, batch)
    box = [state]

    def run():
        box[0], metrics = compiled(box[0], batch)
        return metrics["loss"]
    return run, seconds, memory


def measure(variant: str, frames: int, step: str, dtype: str, args, torch_side: Torch, peaks) -> dict:
    """One row of the table: JAX against PyTorch eager and `torch.compile` on the same weights and clips.

    Args:
      variant: `uniformer_small` or `uniformer_base`.
      frames: frames a clip.
      step: `inference` or `train`.
      dtype: `float32` or `bfloat16`.
      args: the command line.
      torch_side: the MMAction2 model and its conversion.
      peaks: the device's peak TFLOP/s (float32, bfloat16).

    Returns:
      The row: clips/s, MFU, memory and compile seconds of each side, the largest logit difference.
    """
    torch = torch_side.torch
    batch = args.batch if step == "inference" else args.train_batch
    rng = np.random.RandomState(0)
    video_np = rng.randint(0, 256, (batch, frames, args.size, args.size, 3), dtype=np.uint8)
    labels_np = rng.randint(0, NUM_CLASSES, (batch,)).astype(np.int32)
    state_dict, _ = read_state_dict({"state_dict": torch_side.state_dict()}, "mmaction2")
    variables = jax.device_put(keys.to_flax(state_dict))
    video, labels = jax.device_put(video_np), jax.device_put(labels_np)
    attention = "cudnn" if jax.default_backend() == "gpu" and dtype == "bfloat16" else "xla"
    row = {"step": step, "dtype": dtype, "clips/s": {}, "memory": {}, "compile_s": {}}
    if step == "inference":
        run, row["compile_s"]["jax"], row["memory"]["jax"] = jax_inference(variant, dtype, variables, video,
                                                                           attention)
    else:
        run, row["compile_s"]["jax"], row["memory"]["jax"] = jax_train_step(
            variant, dtype, variables, video, labels, attention, args.remat)
    if step == "inference" and dtype == "float32":
        torch_logits = torch_side.sync(torch_side.inference(dtype, False, video_np)())
        row["max_abs_diff"] = float(np.abs(np.asarray(run()) - torch_logits.float().cpu().numpy()).max())
    row["clips/s"]["jax"] = clips_per_second(run, jax.block_until_ready, batch, args.min_seconds)
    for kind in args.torch:
        make = torch_side.inference if step == "inference" else torch_side.train_step
        extra = () if step == "inference" else (labels_np,)
        run = make(dtype, kind == "compile", video_np, *extra)
        start = time.perf_counter()
        try:
            torch_side.sync(run())
        except Exception as error:  # torch.compile does not work everywhere: report it and go on
            if kind != "compile":
                raise
            print(f"# torch.compile failed for {variant} {frames} frames {step} {dtype}: "
                  f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}", file=sys.stderr)
            continue
        first_call = time.perf_counter() - start
        row["memory"][kind] = torch_side.peak_memory(run)
        row["clips/s"][kind] = clips_per_second(run, torch_side.sync, batch, args.min_seconds)
        if kind == "compile":
            row["compile_s"]["compile"] = first_call - batch / row["clips/s"][kind]
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    work = 2 * flops(DEPTHS[variant], frames, args.size, NUM_CLASSES) * (1 if step == "inference" else 3)
    peak = peaks[0 if dtype == "float32" else 1] * 1e12
    row["mfu"] = {k: v * work / peak for k, v in row["clips/s"].items()}
    return row


def cell(value, fmt: str) -> str:
    """A table cell.

    Args:
      value: a number, or None.
      fmt: its format.

    Returns:
      The text, `–` for None.
    """
    return "–" if value is None else format(value, fmt)


def table_row(model: str, row: dict) -> str:
    """A row of the printed Markdown table.

    Args:
      model: the model's label (`b 32`).
      row: what `measure` returned.

    Returns:
      The Markdown row.
    """
    speed, mem, comp = row["clips/s"], row["memory"], row["compile_s"]
    ratio = lambda k: speed["jax"] / speed[k] if k in speed else None  # noqa: E731
    gib = lambda k: mem[k] / 2 ** 30 if mem.get(k) is not None else None  # noqa: E731
    cells = (model, row["step"], row["dtype"], cell(speed["jax"], ".2f"), cell(speed.get("eager"), ".2f"),
             cell(speed.get("compile"), ".2f"), cell(ratio("eager"), ".2f"), cell(ratio("compile"), ".2f"),
             *(cell(row["mfu"].get(k), ".1%") for k in ("jax", "eager", "compile")),
             cell(gib("jax"), ".2f"), cell(gib("eager"), ".2f"), cell(gib("compile"), ".2f"),
             cell(comp["jax"], ".1f"), cell(comp.get("compile"), ".1f"), cell(row.get("max_abs_diff"), ".1e"))
    return "| " + " | ".join(cells) + " |"


HEADER = ("model", "step", "dtype", "jax clips/s", "eager clips/s", "compile clips/s", "jax/eager", "jax/compile",
          "MFU jax", "MFU eager", "MFU compile", "GiB jax", "GiB eager", "GiB compile", "compile s jax",
          "compile s torch", "max Δlogit")


def main(argv=None):
    """`python -m uniformer_jax.benchmark`.

    Args:
      argv: the command line; None: `sys.argv`.
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="s16,b16,b32", help="comma-separated, e.g. s16,b16,b32")
    parser.add_argument("--steps", default="inference,train", help="inference, train or both")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--torch", default="eager,compile", help="PyTorch modes to time: eager, compile or both")
    parser.add_argument("--batch", type=int, default=8, help="clips per inference call")
    parser.add_argument("--train-batch", type=int, default=8, help="clips per train step")
    parser.add_argument("--remat", default="0,0,0,0", help="JAX blocks rematerialised per stage in train steps")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--min-seconds", type=float, default=10.0, help="timing per measurement")
    parser.add_argument("--peak-tflops", help="the device's peak as FLOAT32,BFLOAT16 TFLOP/s, for MFU")
    args = parser.parse_args(argv)
    try:
        models = [parse_model(m) for m in args.models.split(",")]
        args.steps, args.dtypes, args.torch = (v.split(",") for v in (args.steps, args.dtypes, args.torch))
        for name, values, allowed in (("steps", args.steps, ("inference", "train")),
                                      ("dtypes", args.dtypes, ("float32", "bfloat16")),
                                      ("torch", args.torch, ("eager", "compile"))):
            if not set(values) <= set(allowed):
                raise UsageError(f"--{name} takes {', '.join(allowed)}, got {','.join(values)}")
        args.remat = tuple(int(r) for r in args.remat.split(","))
        if len(args.remat) != 4:
            raise UsageError(f"--remat {args.remat} needs 4 numbers, one per stage")
        if args.size % 32:
            raise UsageError(f"--size {args.size}: the model downsamples by 32, so it must be a multiple of 32")
        peaks = tuple(float(p) for p in args.peak_tflops.split(",")) if args.peak_tflops else None
        if peaks is not None and len(peaks) != 2:
            raise UsageError(f"--peak-tflops {args.peak_tflops}: give FLOAT32,BFLOAT16")
    except (UsageError, ValueError) as error:
        parser.error(str(error))
    # Before JAX starts its backend, which would otherwise take 75% of a GPU's memory and leave PyTorch the rest.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    with tempfile.TemporaryDirectory() as cache:
        # Inductor's on-disk caches would make torch.compile's times those of earlier runs; JAX keeps none.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        benchmark(args, models, peaks)


def benchmark(args, models, peaks):
    """Prints the header and a row for each model, step and dtype.

    Args:
      args: the command line.
      models: (variant, frames) pairs.
      peaks: the device's peak TFLOP/s given on the command line, or None.
    """
    import torch

    gpu = jax.default_backend() == "gpu"
    device = torch.device("cuda" if gpu else "cpu")
    if gpu:
        torch.set_float32_matmul_precision("high")  # TF32, as JAX's default precision on GPUs
    kind = jax.devices()[0].device_kind
    datasheet = next((p for name, p in PEAK_TFLOPS.items() if name in kind), None)
    if peaks:
        source = "given"
    elif datasheet:
        peaks, source = datasheet, "datasheet"
    else:
        peaks, source = measured_peak_tflops(torch, device), "best 4096^3 PyTorch matmul"
    name = torch.cuda.get_device_name() if gpu else (platform.processor() or platform.machine())
    print(f"# {name} ({kind}), {os.cpu_count()} CPUs; python {platform.python_version()}, jax {jax.__version__} "
          f"({jax.default_backend()}), torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"{args.size}x{args.size}, batch {args.batch} (inference) / {args.train_batch} (train); "
          f"peak {peaks[0]:.1f} / {peaks[1]:.1f} TFLOP/s float32 / bfloat16 ({source})")
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for variant, frames in models:
        torch_side = Torch(variant, device)
        for step in args.steps:
            for dtype in args.dtypes:
                row = measure(variant, frames, step, dtype, args, torch_side, peaks)
                print(table_row(f"{variant.removeprefix('uniformer_')} {frames}", row), flush=True)

