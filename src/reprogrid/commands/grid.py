"""`reprogrid grid`: the cell table of a study config as TSV (and, for a fractional design, its alias
structure: written with --aliases, summarised on standard error)."""

from __future__ import annotations

import sys

HELP = "print the cell table of a study config as TSV"


def add_arguments(p) -> None:
    p.add_argument("--config", required=True, help="study config YAML")
    p.add_argument("--out", help="write the TSV here instead of standard output")
    p.add_argument("--aliases", help="fractional design: write its alias structure (JSON) here")


def run(args) -> int:
    from reprogrid import designs, grid
    from reprogrid.io import write_json, write_text
    from reprogrid.study import load_study

    cfg = load_study(args.config)
    cells = grid.expand(cfg)
    text = grid.to_tsv(cells)
    design = grid.design_plan(cfg)
    struct = designs.alias_structure(design) if design is not None else {"design": {"type": "full"}}
    if args.out:
        write_text(args.out, text)
    else:
        sys.stdout.write(text)
    if args.aliases:
        write_json(args.aliases, struct)
    if design is not None:
        lines = designs.alias_summary(struct)
        lines.insert(1, f"generation ids: {cells['generation_id'].nunique()} "
                        f"(cells: {len(cells)}; the full grid has {design.n_full} generation runs)")
        sys.stderr.write("".join(f"# {line}\n" for line in lines))
    return 0
