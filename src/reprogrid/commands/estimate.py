"""`reprogrid estimate`: the model-based attribution of an incomplete (fractional) grid: shares with the columns
of `attribute`, predicted means of the unrun cells with intervals, and a held-out check."""

from __future__ import annotations

from pathlib import Path

from reprogrid.attribution import FAMILIES, check_int, varying_factors
from reprogrid.attribution.incomplete import CSV_NAME, HOLDOUT_NAME, JSON_NAME, PREDICTED_NAME, estimate
from reprogrid.commands.args import column_list, number
from reprogrid.errors import UserError
from reprogrid.io import read_table, write_csv, write_json

HELP = "shares, predicted unrun cells and a held-out check from an incomplete (fractional) grid"


def add_arguments(parser) -> None:
    parser.add_argument("input", metavar="INPUT", help="table with one row per sample (.parquet or .csv)")
    parser.add_argument("--response", required=True, metavar="COL", help="numeric response column")
    parser.add_argument("--factors", required=True, metavar="A,B,...", help="comma-separated factor columns")
    parser.add_argument("--family", default="gaussian", metavar="gaussian|binomial",
                        help="gaussian (WLS on cell means) or binomial (GLM on cell proportions)")
    parser.add_argument("--draws", default="200", metavar="N",
                        help="coefficient draws for the share intervals (default 200; 0: none)")
    parser.add_argument("--noise-draws", default="100", metavar="N",
                        help="null draws per factor for the noise floor (default 100; 0: none)")
    parser.add_argument("--folds", default="10", metavar="K", help="folds of the held-out check (default 10)")
    parser.add_argument("--seed", default="0", metavar="S", help="random seed (default 0)")
    parser.add_argument("--ci", default="0.95", metavar="LEVEL", help="interval level (default 0.95)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help=f"output directory ({CSV_NAME}, {JSON_NAME}, {PREDICTED_NAME}, {HOLDOUT_NAME})")


def run(args) -> int:
    factors = column_list(args.factors, "--factors")
    if not factors:
        raise UserError("expected at least one factor column", field="--factors")
    if args.family not in FAMILIES:
        raise UserError(f"unknown family {args.family!r}; expected one of: {', '.join(FAMILIES)}", field="--family")
    draws = check_int(number(args.draws), "--draws", 0)
    noise = check_int(number(args.noise_draws), "--noise-draws", 0)
    folds = check_int(number(args.folds), "--folds", 2)
    seed = check_int(number(args.seed), "--seed", 0)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory", field="--out")
    df = read_table(args.input, [args.response, *factors], what="INPUT", text_columns=factors)
    factors = varying_factors(df, factors)
    if not factors:
        raise UserError("no factor varies in the table", field="--factors")
    try:
        result = estimate(df, args.response, factors, family=args.family, draws=draws, seed=seed, ci=args.ci,
                          noise_draws=noise, folds=folds)
    except UserError as exc:
        raise exc.in_file(f"INPUT {args.input}") from None
    write_outputs(result, out)
    d = result.details
    ho = d["holdout"]
    print(f"{d['n_cells']} of {d['n_cells_full_grid']} cells measured; model terms: {', '.join(d['model_terms'])}")
    for chain in d["aliased"]:
        print(f"aliased (estimated together, not split): {chain}")
    if "coverage" in ho:
        print(f"held-out check ({ho['folds']} folds, {ho['cells']} cells): coverage {ho['coverage']:.2f} of "
              f"nominal {ho['nominal']:.2f}, RMSE {ho['rmse']:.4g}")
    print(f"wrote {CSV_NAME}, {JSON_NAME}, {PREDICTED_NAME}, {HOLDOUT_NAME} in {out}")
    return 0


def write_outputs(result, out_dir) -> None:
    """The four files of ``reprogrid estimate`` in ``out_dir``."""
    out = Path(out_dir)
    write_csv(result.table, out / CSV_NAME, float_format="%.10g")
    write_json(out / JSON_NAME, result.to_json_obj())
    write_csv(result.predicted, out / PREDICTED_NAME, float_format="%.10g")
    write_csv(result.holdout, out / HOLDOUT_NAME, float_format="%.10g")
