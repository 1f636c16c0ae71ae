"""`reprogrid explain`: decompose the gap between two protocols into factor contributions."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import yaml

from reprogrid.catalogue import cell_text, factor_names, level_text
from reprogrid.errors import UserError
from reprogrid.explain import explain, parse_levels
from reprogrid.io import read_table, to_jsonable, write_json, write_text

HELP = "decompose the gap between two protocols into factor contributions"


def add_arguments(parser: object) -> None:
    parser.add_argument("input", metavar="INPUT", help="cells or samples table (.parquet, .csv, .tsv)")
    parser.add_argument("--response", required=True, metavar="COL", help="response column (e.g. score)")
    parser.add_argument("--low", required=True, metavar="SPEC", help='low protocol, "factor=level,factor=level"')
    parser.add_argument("--high", required=True, metavar="SPEC", help='high protocol, "factor=level,..."')
    parser.add_argument("--item", metavar="COL", help="item column (per-item input): enables the bootstrap")
    parser.add_argument("--factors", metavar="F,G", help="factor columns (default: the study's factors present)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap replicates (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--predicted", metavar="FILE",
                        help="predicted_cells.csv of `reprogrid estimate` (a fractional design): path cells that were "
                             "not run are taken from its estimable predictions, labelled as predicted")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")


def run(args) -> int:
    low = parse_levels(args.low, "--low")
    high = parse_levels(args.high, "--high")
    factors = [f.strip() for f in args.factors.split(",") if f.strip()] if args.factors else None
    where = f"INPUT {args.input}"
    text = [*(factors if factors is not None else factor_names()), *low, *high]  # levels are text, not numbers
    df = read_table(args.input, what="INPUT", text_columns=list(dict.fromkeys(text)))
    predicted = None
    if args.predicted:
        from reprogrid.designs.predicted import read_predicted

        predicted = read_predicted(args.predicted)
    try:
        res = explain(df, args.response, low, high, item=args.item, bootstrap=args.bootstrap, seed=args.seed,
                      factors=factors, level=args.level, predicted=predicted)
    except UserError as exc:
        raise exc.in_file(where) from None
    for reason, n in res.left_out.items():
        print(f"note: {where}: {n} row(s) left out ({reason})", file=sys.stderr)
    out = Path(args.out)
    if res.missing_cells:
        for cell in res.missing_cells:
            print(f"missing cell: {cell_text(cell)}", file=sys.stderr)
        text = ("# cells on the explanation path that the input lacks; add them to the study config\n"
                + yaml.safe_dump({"missing_cells": [{k: to_jsonable(v) for k, v in c.items()} for c in res.missing_cells]},
                                 sort_keys=False, default_flow_style=None))
        write_text(out / "missing_cells.yaml", text)
        print(f"error: {len(res.missing_cells)} cell(s) on the path are missing; listed in {out / 'missing_cells.yaml'}",
              file=sys.stderr)
        return 1
    table = res.contributions.assign(basis=res.summary()["basis"])
    for cell in res.predicted_cells:
        levels = {k: v for k, v in cell.items() if k not in ("predicted", "ci_low", "ci_high")}
        print(f"predicted (unrun) cell on the path: {cell_text(levels)}: {cell['predicted']:.4g} "
              f"[{cell['ci_low']:.4g}, {cell['ci_high']:.4g}]", file=sys.stderr)
    csv = table.to_csv(index=False, float_format="%.10g", lineterminator="\n")
    write_text(out / "contributions.csv", csv)
    write_json(out / "summary.json", res.summary())
    basis = f"  ({len(res.predicted_cells)} of the path's cells predicted, not measured)" if res.predicted_cells else ""
    print(f"low {res.low_value:.6g}  high {res.high_value:.6g}  gap {res.gap:.6g}{basis}")
    for r in table.itertuples():
        ci = "" if math.isnan(r.ci_low) else f"  [{r.ci_low:.4g}, {r.ci_high:.4g}]"
        print(f"  {r.factor}: {r.contribution:+.6g}{ci}  ({level_text(r.low_level)} -> {level_text(r.high_level)})")
    return 0
