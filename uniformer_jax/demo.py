"""The model and the converter end to end, on a clip and a checkpoint this demo makes itself.

    python -m uniformer_jax.demo [--workdir demo_work] [--variant uniformer_small] [--frames 16]

1. initialises a random-weight UniFormer and writes it as a Sense-X PyTorch state dict (`--to-torch`),
2. converts that .pth with `python -m convert` into an Orbax checkpoint,
3. loads it with `load_pretrained` and classifies a synthetic clip (a disc moving across the frame),
4. checks that the .pth -> Orbax -> .pth round trip is bit-exact.
No download: with random weights the classes are meaningless, but every step is the real one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import convert.__main__ as convert_cli
from uniformer_jax import create_model, data, load_pretrained, save_pretrained


def moving_disc(frames: int, size: int = 224) -> np.ndarray:
    """A uint8 clip (T, H, W, 3): a bright disc crossing a dark frame from left to right."""
    yy, xx = np.mgrid[:size, :size]
    clip = np.zeros((frames, size, size, 3), np.uint8)
    for t in range(frames):
        cx = size * (0.15 + 0.7 * t / max(frames - 1, 1))
        clip[t][(xx - cx) ** 2 + (yy - size / 2) ** 2 < (size / 8) ** 2] = (230, 180, 40)
    return clip


def run_convert(*args):
    if convert_cli.main([str(a) for a in args]) != 0:
        raise SystemExit(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="demo_work")
    parser.add_argument("--variant", default="uniformer_small", choices=["uniformer_small", "uniformer_base"])
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    names = [f"class_{i:03d}" for i in range(400)]
    (work / "classes.txt").write_text("\n".join(names) + "\n")

    print(f"1. random-weight {args.variant} -> {work / 'random.pth'} (Sense-X state dict)")
    model = create_model(args.variant, num_classes=400)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 64, 64, 3)))
    save_pretrained(work / "random_jax", variables, {"variant": args.variant, "num_classes": 400,
                                                     "ln_eps": model.ln_eps, "class_names": None,
                                                     "source_form": "jax-init"}, overwrite=True)
    run_convert("--to-torch", work / "random_jax", work / "random.pth", "--force")
    convert_args = (work / "random.pth", work / "converted", "--labels", work / "classes.txt", "--force")
    print(f"2. python -m convert {' '.join(map(str, convert_args))}")
    run_convert(*convert_args)

    print(f"3. load_pretrained({str(work / 'converted')!r}) and classify a {args.frames}x224x224 clip")
    model, variables = load_pretrained(work / "converted")
    clip = moving_disc(args.frames)[None]
    predict = jax.jit(lambda v, clips: jax.nn.softmax(model.apply(v, data.normalise(clips))))
    start = time.perf_counter()
    probs = np.asarray(predict(variables, clip))[0]
    compiled = time.perf_counter() - start
    start = time.perf_counter()
    probs = np.asarray(predict(variables, clip))[0]
    print(f"   compile + first clip {compiled:.1f} s, then {time.perf_counter() - start:.2f} s per clip "
          f"on {jax.devices()[0].device_kind}")
    for i in np.argsort(probs)[::-1][:5]:
        print(f"   {names[i]}  {probs[i]:.4f}")

    print("4. round trip .pth -> Orbax -> .pth")
    run_convert("--to-torch", work / "converted", work / "roundtrip.pth", "--force")
    import torch

    first = torch.load(work / "random.pth", weights_only=True)
    second = torch.load(work / "roundtrip.pth", weights_only=True)
    same = first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    print(f"   {len(first)} tensors, bit-exact: {same}")
    if not same:
        raise SystemExit("round trip changed the weights")


if __name__ == "__main__":
    main()
