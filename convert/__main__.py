"""python -m convert SRC.pth DST_DIR      PyTorch UniFormer checkpoint -> converted Orbax checkpoint
python -m convert --to-torch DIR OUT.pth  converted checkpoint (or a release name) -> Sense-X PyTorch state dict
                                          (UniFormerV2: an OpenGVLab .pyth)
A UniFormerV2 starts from CLIP: python -m convert ViT-B-16.pt DIR --num-classes 400 [--structure sth].

Class lists (--labels, --reorder-to) are files or the packaged short names of `python -m uniformer_jax.labels`."""

from __future__ import annotations

import argparse
import sys

from uniformer_jax.models.variants import STRUCTURES, VARIANT_NAMES
from uniformer_jax.weights import hub
from uniformer_jax.weights.checkpoints import CheckpointError
from uniformer_jax.weights.conversion import FORMS, INFLATE_MODES, ConversionError, to_orbax, to_torch


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="PyTorch checkpoint file (or, with --to-torch, a converted directory)")
    parser.add_argument("dst", help="directory to write (or, with --to-torch, the .pth file)")
    parser.add_argument("--to-torch", action="store_true", help="write a Sense-X state dict from a converted DIR")
    parser.add_argument("--form", choices=FORMS, help="checkpoint form (default: detected)")
    parser.add_argument("--variant", choices=sorted(VARIANT_NAMES), help="model variant (default: from block counts)")
    parser.add_argument("--num-classes", type=int,
                        help="head size (default: the checkpoint's); another size initialises a new head")
    parser.add_argument("--labels", help="class names of the source head rows: a short name (k400-sensex, ...) or a "
                                         "file, one per line, or 'name<TAB>idx' or 'name idx' lines")
    parser.add_argument("--reorder-to", help="class list whose order the head rows are permuted into "
                                             "(matched by name, ignoring case, spaces, underscores, punctuation); "
                                             "from a K710 head (--labels k710-...) the K400/600/700 rows are "
                                             "selected, as MMAction2's channel maps do")
    parser.add_argument("--inflate", choices=INFLATE_MODES, default="average",
                        help="2D->3D inflation of ImageNet weights: 'average' (Sense-X) or 'center' (MMAction2)")
    parser.add_argument("--ln-eps", type=float, help="LayerNorm eps of the attention blocks (default: 1e-5 for "
                                                     "MMAction2 checkpoints, else 1e-6)")
    parser.add_argument("--structure", choices=STRUCTURES,
                        help="what a CLIP image encoder becomes: a UniFormerV2 as released for Kinetics (default), "
                             "Something-Something or with a frozen backbone")
    parser.add_argument("--seed", type=int, default=0, help="seed of a newly initialised head")
    parser.add_argument("--force", action="store_true", help="replace an existing destination")
    args = parser.parse_args(argv)
    if args.to_torch:
        given = [f"--{k.replace('_', '-')}" for k in ("form", "variant", "num_classes", "labels", "reorder_to",
                                                      "ln_eps", "structure") if getattr(args, k) is not None]
        if given:
            parser.error(f"{', '.join(given)} only apply when converting from PyTorch, not with --to-torch")
    if args.num_classes is not None and args.num_classes < 1:
        parser.error("--num-classes must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.to_torch:
            written = to_torch(hub.resolve(args.src), args.dst, overwrite=args.force)
            print(f"wrote {args.dst}: {written['form']} state dict, {written['keys']} tensors")
        else:
            meta = to_orbax(args.src, args.dst, form=args.form, variant=args.variant, num_classes=args.num_classes,
                            labels=args.labels, reorder_to=args.reorder_to, inflate_mode=args.inflate,
                            ln_eps=args.ln_eps, structure=args.structure, seed=args.seed,
                            overwrite=args.force)
            names = "with class names" if meta["class_names"] else "no class names (pass --labels to record them)"
            print(f"wrote {args.dst}: {meta['variant']}, {meta['num_classes']} classes ({meta['head']} head), "
                  f"from a {meta['source_form']} checkpoint, LayerNorm eps {meta['ln_eps']:g}, {names}")
    except (ConversionError, CheckpointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
