"""python -m uniformer_jax.labels: the packaged class lists, their short names and sizes.

A short name works wherever a class-list file does (`--classes`, `--labels`, `--reorder-to`,
`--config.data.class_names`).
"""

from __future__ import annotations

import argparse
import sys

from uniformer_jax.data.class_lists import CLASS_LISTS, read_class_names


def main(argv: list[str] | None = None) -> int:
    """Prints one line a packaged list: its short name, class count and description.

    Args:
      argv: the command line (it takes no arguments); None: `sys.argv`.

    Returns:
      The exit status, 0.
    """
    argparse.ArgumentParser(prog="python -m uniformer_jax.labels", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    print(f"{'name':16} {'classes':>7}  description")
    for name, (_, description) in CLASS_LISTS.items():
        print(f"{name:16} {len(read_class_names(name)):7d}  {description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
