"""`reprogrid grid`: the cell table of a study config as TSV."""

from __future__ import annotations

import sys

HELP = "print the cell table of a study config as TSV"


def add_arguments(p) -> None:
    p.add_argument("--config", required=True, help="study config YAML")
    p.add_argument("--out", help="write the TSV here instead of standard output")


def run(args) -> int:
    from reprogrid import grid
    from reprogrid.io import write_text
    from reprogrid.study import load_study

    cfg = load_study(args.config)
    text = grid.to_tsv(grid.expand(cfg))
    if args.out:
        write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0
