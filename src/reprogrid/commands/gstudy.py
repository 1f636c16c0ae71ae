"""`reprogrid gstudy`: variance components of a score over random facets, G coefficients and design advice."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reprogrid.commands.args import column_list, positive
from reprogrid.errors import UserError
from reprogrid.dstudy import generalizability
from reprogrid.gstudy import CSV_NAME, JSON_NAME
from reprogrid.io import read_table, write_csv, write_json

HELP = "variance components (items, tasks, seeds vs protocol), G coefficient and design advice"
DEFAULT_RANDOM = "task,data_seed"
DEFAULT_NEST = "context_length,tokenizer"


def add_arguments(parser: object) -> None:
    parser.add_argument("input", metavar="INPUT", help="table with one row per (cell, item) score (.parquet or .csv)")
    parser.add_argument("--response", required=True, metavar="COL", help="numeric response column")
    parser.add_argument("--item", required=True, metavar="COL[,COL]", help="item column(s)")
    parser.add_argument("--factors", required=True, metavar="A,B,...", help="protocol factor columns (fixed, "
                        "except those also named in --random or --nest)")
    parser.add_argument("--random", default=DEFAULT_RANDOM, metavar="A,B",
                        help=f"random facets, items nested in them (default {DEFAULT_RANDOM}; absent columns "
                             "are skipped when the default is used)")
    parser.add_argument("--nest", default=DEFAULT_NEST, metavar="A,B",
                        help=f"fixed factors that change the items (default {DEFAULT_NEST}, those present)")
    parser.add_argument("--ci", default="0.95", metavar="LEVEL", help="interval level (default 0.95)")
    parser.add_argument("--halfwidth", default=None, metavar="H", help="target half-width of a cell score "
                        "(default: half the study's)")
    parser.add_argument("--difference", default=None, metavar="D", help="difference between two cells to detect "
                        "at 80%% power (default: half the study's minimum detectable effect)")
    parser.add_argument("--out", required=True, metavar="DIR", help=f"output directory ({CSV_NAME}, {JSON_NAME})")
    parser.add_argument("--or-explain", action="store_true",
                        help="a design the estimators cannot take (unbalanced beyond failed cells) is not an error: "
                             "write empty outputs that say why, exit 0 (the workflow's setting)")


def run(args) -> int:
    item = column_list(args.item, "--item")
    factors = column_list(args.factors, "--factors")
    random = column_list(args.random, "--random")
    nest = column_list(args.nest, "--nest")
    level = positive(args.ci, "--ci")
    if level >= 1:
        raise UserError(f"expected a number in (0, 1), got {args.ci!r}", field="--ci")
    halfwidth = positive(args.halfwidth, "--halfwidth")
    difference = positive(args.difference, "--difference")
    where = f"INPUT {args.input}"
    df = read_table(args.input, None, what="INPUT", text_columns=factors)
    if args.random == DEFAULT_RANDOM:
        random = [c for c in random if c in df.columns]
    if args.nest == DEFAULT_NEST:
        nest = [c for c in nest if c in df.columns]
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory", field="--out")
    try:
        table, details = generalizability(df, args.response, item, factors, random, nest, level, halfwidth, difference)
    except UserError as exc:
        if not args.or_explain:
            raise exc.in_file(where) from None
        write_csv(pd.DataFrame(columns=["component"]), out / CSV_NAME)
        write_json(out / JSON_NAME, {"available": False, "reason": str(exc.in_file(where))})
        print(f"note: no variance components: {exc.in_file(where)}")
        return 0
    write_csv(table, out / CSV_NAME, float_format="%.10g")
    write_json(out / JSON_NAME, {"components": table.to_dict(orient="records"), **details})
    for f, why in details["design"]["not_facets"].items():
        print(f"note: {where}: {f}: {why}")
    for line in details["design_advice"]["advice"]:
        print(line)
    print(f"wrote {out / CSV_NAME} and {out / JSON_NAME}")
    return 0
