"""Released UniFormer models by name.

    python -m uniformer_jax.zoo list [--json]       every release, and whether it is cached
    python -m uniformer_jax.zoo fetch NAME ...      fetch and convert (or a .pth file); prints each directory

The cache is `$UNIFORMER_JAX_CACHE` (default `~/.cache/uniformer_jax`); `UNIFORMER_JAX_MIRROR` (a URL or a
directory) serves every published file instead of its sources, for clusters without internet.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from uniformer_jax.weights import releases
from uniformer_jax.weights.checkpoints import CheckpointError
from uniformer_jax.weights.hub import fetch, is_cached, resolve


def _row(release: releases.Release) -> dict:
    return {"name": release.name, "file": release.file, "form": release.form, "variant": release.variant,
            "classes": release.classes, "frames": release.frames, "rate": release.rate, "config": release.config,
            "top1": release.top1, "sha256": release.sha256, "source": release.source, "cached": is_cached(release.name)}


def main(argv=None) -> int:
    """`python -m uniformer_jax.zoo list|fetch`.

    Args:
      argv: the command line; None: `sys.argv`.

    Returns:
      The exit status: 0, or 2 when a release cannot be fetched.
    """
    parser = argparse.ArgumentParser(prog="python -m uniformer_jax.zoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every release")
    listing.add_argument("--json", action="store_true", help="one JSON object a release")
    fetching = commands.add_parser("fetch", help="download, verify and convert releases (or .pth files) into the "
                                                 "cache")
    fetching.add_argument("names", nargs="+", metavar="NAME")
    args = parser.parse_args(argv)
    if args.command == "list":
        rows = [_row(r) for r in releases.RELEASES]
        if args.json:
            print("\n".join(json.dumps(row) for row in rows))
        else:
            width = max(len(row["name"]) for row in rows)
            print(f"{'name':{width}} {'variant':19} {'frames':>6} {'classes':15} {'top-1':>5}  cached  file")
            for row in rows:
                frames = f"{row['frames']}x{row['rate']}" if row["frames"] else "2D"
                top1 = f"{row['top1']:5.1f}" if row["top1"] is not None else "    -"
                classes = row["classes"] or ("imagenet" if row["frames"] is None else "unnamed")  # rows by index
                print(f"{row['name']:{width}} {row['variant']:19} {frames:>6} {classes:15} "
                      f"{top1}  {'yes' if row['cached'] else 'no':6}  {row['file']}")
        return 0
    try:
        for name in args.names:  # a release, or a .pth file (how _resolve_alone converts one)
            print(resolve(name) if Path(name).is_file() else fetch(name), flush=True)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
