"""`reprogrid claims check|map`: consistency checks of published claims; claims mapped onto a grid."""

from __future__ import annotations

import sys
from pathlib import Path

from reprogrid.claims import check_claims, load_claims, map_claims_to_cells, verdicts
from reprogrid.claims.mapping import published_record
from reprogrid.errors import UserError
from reprogrid.io import read_table, write_json, write_text
from reprogrid.layout import Layout

HELP = "check published claims for internal consistency and map them onto a grid"


def add_arguments(parser: object) -> None:
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = sub.add_parser("check", help="consistency checks that need no model (exit 1 if any finding)",
                       description="consistency checks that need no model: exit 0 clean, 1 findings, 2 invalid file")
    p.add_argument("files", nargs="+", metavar="FILE", help="claims YAML files")
    p.add_argument("--pair", metavar="LOW,HIGH",
                   help="claim ids of the pair whose traceability is reported first (default: lowest and highest)")
    m = sub.add_parser("map", help="map claims to grid cells and write the verdicts",
                       description="map claims to grid cells (claim_cells.csv), write verdicts.json and the "
                                   "published record on the grid's factors (published.csv)")
    m.add_argument("files", nargs="+", metavar="FILE", help="claims YAML files")
    m.add_argument("--cells", required=True, metavar="CELLS", help="cells table (.parquet, .csv, .tsv)")
    m.add_argument("--samples", metavar="SAMPLES", help="samples table: item-bootstrap intervals")
    m.add_argument("--shares", metavar="TABLE", help="variance shares (effect, shapley, ci_low, ci_high)")
    m.add_argument("--pair", metavar="LOW,HIGH", help="claim ids of the pair (default: lowest and highest value)")
    m.add_argument("--factors", metavar="F,G", help="factor columns (default: the study's factors present)")
    m.add_argument("--bootstrap", type=int, default=1000, metavar="N")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--level", type=float, default=0.95)
    m.add_argument("--aggregation", choices=["task_mean", "item_mean"], default="task_mean",
                   help="how a cell without an aggregation column aggregates its items (the study's fixed level)")
    m.add_argument("--predicted", metavar="FILE",
                   help="predicted_cells.csv of `reprogrid estimate` (a fractional design): unrun cells with "
                        "estimable predictions join the grid, labelled as predicted")
    m.add_argument("--out", required=True, metavar="DIR")


def _pair(text: str | None, claims) -> tuple[str, str] | None:
    if not text:
        return None
    parts = [s.strip() for s in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise UserError(f"expected 'LOW_ID,HIGH_ID', got {text!r}", field="--pair")
    ids = [c.id for c in claims]
    for cid in parts:
        if cid not in ids:
            raise UserError(f"unknown claim id {cid!r}; ids: {', '.join(ids)}", field="--pair")
    return parts[0], parts[1]


def run(args) -> int:
    claims = load_claims(args.files)
    if args.verb == "check":
        findings = check_claims(claims, _pair(args.pair, claims))
        for f in findings:
            print(str(f))
        n_files = len({c.file for c in claims})
        print(f"checked {len(claims)} claims in {n_files} file(s): {len(findings)} finding(s)", file=sys.stderr)
        return 1 if findings else 0
    # map
    pair = _pair(args.pair, claims)
    if args.bootstrap < 0:
        raise UserError(f"expected a count >= 0, got {args.bootstrap}", field="--bootstrap")
    if not 0 < args.level < 1:
        raise UserError(f"expected a level in (0, 1), got {args.level}", field="--level")
    factors = [f.strip() for f in args.factors.split(",") if f.strip()] if args.factors else None
    cells = read_table(args.cells, what="--cells")
    samples = read_table(args.samples, what="--samples") if args.samples else None
    shares = read_table(args.shares, what="--shares") if args.shares else None
    predicted = None
    if args.predicted:
        from reprogrid.designs.predicted import read_predicted, with_predicted

        predicted = read_predicted(args.predicted)
    grid_cells = with_predicted(cells, predicted, factor_names=factors) if predicted is not None else cells
    table = map_claims_to_cells(claims, grid_cells, factors)
    result = verdicts(claims, cells, samples, factors, pair, shares, args.bootstrap, args.seed, args.level,
                      args.aggregation, predicted=predicted)
    published = published_record(claims, grid_cells, factors)
    out, names = Path(args.out), Layout()  # file names as the layout has them under claims/
    write_text(out / Path(names.claim_cells).name, table.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
    write_text(out / Path(names.published).name, published.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
    write_json(out / Path(names.verdicts).name, result)
    for e in result["explanations"]:
        print(e["summary"])
    print(f"reproducibility: {result['reproducibility']['status']}: {result['reproducibility']['summary']}")
    return 0
