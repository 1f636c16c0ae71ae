"""`reprogrid attribute`: variance shares of a response over factors, with intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reprogrid.attribution import (COLUMNS, CSV_NAME, DEFAULT_NOISE_PERMUTATIONS, FAMILIES, JSON_NAME,
                                   AttributionResult, attribute, check_int, varying_factors)
from reprogrid.commands.args import column_list, number
from reprogrid.errors import UserError
from reprogrid.io import read_table, write_csv, write_json

HELP = "variance shares of a response over factors, with intervals"


def add_arguments(parser: object) -> None:
    parser.add_argument("input", metavar="INPUT", help="table with one row per sample (.parquet or .csv)")
    parser.add_argument("--response", required=True, metavar="COL", help="numeric response column")
    parser.add_argument("--factors", required=True, metavar="A,B,...", help="comma-separated factor columns")
    parser.add_argument("--item", default=None, metavar="COL[,COL]",
                        help="item column(s) (a composite key if several); the bootstrap resamples items "
                             "jointly across cells. Default: every row is its own item")
    parser.add_argument("--family", default="gaussian", metavar="gaussian|binomial",
                        help="gaussian (sums of squares) or binomial (0/1 or fraction outcomes; deviance)")
    parser.add_argument("--bootstrap", default="200", metavar="N", help="bootstrap replicates (default 200; 0: none)")
    parser.add_argument("--seed", default="0", metavar="S", help="random seed (default 0)")
    parser.add_argument("--ci", default="0.95", metavar="LEVEL", help="interval level (default 0.95)")
    parser.add_argument("--noise-permutations", default=str(DEFAULT_NOISE_PERMUTATIONS), metavar="N",
                        help="permutations per factor for the noise floor "
                             f"(default {DEFAULT_NOISE_PERMUTATIONS}; 0: none)")
    parser.add_argument("--out", required=True, metavar="DIR", help=f"output directory ({CSV_NAME}, {JSON_NAME})")
    parser.add_argument("--allow-degenerate", action="store_true",
                        help="(used by the workflow) drop factors that do not vary in INPUT, and when nothing "
                             "varies write a result that says so instead of failing")


def run(args) -> int:
    factors = column_list(args.factors, "--factors")
    if not factors:
        raise UserError("expected at least one factor column", field="--factors")
    items = column_list(args.item, "--item")
    family = str(args.family)
    if family not in FAMILIES:
        raise UserError(f"unknown family {family!r}; expected one of: {', '.join(FAMILIES)}", field="--family")
    bootstrap = check_int(number(args.bootstrap), "--bootstrap", 0)
    seed = check_int(number(args.seed), "--seed", 0)
    perms = check_int(number(args.noise_permutations), "--noise-permutations", 0)
    try:
        ci = float(args.ci)
    except ValueError:
        raise UserError(f"expected a number in (0, 1), got {args.ci!r}", field="--ci") from None
    if not 0 < ci < 1:
        raise UserError(f"expected a number in (0, 1), got {args.ci!r}", field="--ci")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory", field="--out")
    if args.response in factors or args.response in items:
        raise UserError(f"column {args.response!r} is the response; it cannot be a factor or item column",
                        field="--response")
    cols = [args.response, *factors, *items]
    where = f"INPUT {args.input}"
    df = read_table(args.input, cols, what="INPUT", text_columns=factors)
    if args.allow_degenerate:
        factors = varying_factors(df, factors)
        reason = None
        if not factors:
            reason = "no factor varies across the scored cells"
        elif pd.to_numeric(df[args.response], errors="coerce").nunique() <= 1:
            reason = f"every sample has the same {args.response} ({float(df[args.response].iloc[0]):g})"
        if reason:
            write_degenerate(out, reason, args.response, factors, len(df))
            print(f"no variance to attribute: {reason}")
            return 0
    try:
        result = attribute(df, args.response, factors, item=items or None, family=family, bootstrap=bootstrap,
                           seed=seed, ci=ci, noise_floor_permutations=perms)
    except UserError as exc:
        raise exc.in_file(where) from None
    for name, members in result.details.get("aliased", {}).items():
        print(f"note: {where}: {', '.join(members)}: aliased (each level of one goes with exactly one level of "
              f"the other); decomposed together as one factor {name}")
    paths = write_result(result, out)
    print(f"wrote {paths['csv']} and {paths['json']}")
    return 0


def write_result(result: AttributionResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``variance_shares.csv`` (the table, 10 significant digits) and ``variance_shares.json``
    (the table's rows as ``effects`` plus the details) into ``out_dir``, each atomically."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory", field="--out")
    csv_path, json_path = out / CSV_NAME, out / JSON_NAME
    try:
        write_csv(result.table, csv_path, float_format="%.10g")
        write_json(json_path, result.to_json_obj())
    except OSError as exc:
        raise UserError(f"cannot write to {out}: {exc.strerror or exc}", field="--out") from None
    return {"csv": csv_path, "json": json_path}


def write_degenerate(out: Path, reason: str, response: str, factors: list[str], n_rows: int) -> None:
    """Outputs for a study with nothing to attribute: a residual-only table and the reason."""
    table = pd.DataFrame([{c: np.nan for c in COLUMNS} | {"effect": f} for f in factors]
                         + [{c: np.nan for c in COLUMNS} | {"effect": "residual"}], columns=COLUMNS)
    write_csv(table, out / CSV_NAME)
    write_json(out / JSON_NAME, {"degenerate": reason, "response": response, "factors": factors,
                                 "n_rows": n_rows, "effects": []})
