"""`reprogrid report`: the attribution report (Markdown + self-contained HTML)."""

from __future__ import annotations

import sys
from pathlib import Path

from reprogrid.errors import UserError
from reprogrid.report import DEFAULT_BOOTSTRAP, build_report
from reprogrid.study import load_study

HELP = "write the attribution report (Markdown + self-contained HTML)"


def add_arguments(p: object) -> None:
    p.add_argument("--config", required=True, help="study config YAML")
    p.add_argument("--results", required=True, help="the study's results directory")
    p.add_argument("--out", default=None, help="output directory (default: RESULTS/report)")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, metavar="N",
                   help=f"item-bootstrap replicates for score intervals (default {DEFAULT_BOOTSTRAP})")


def run(args) -> int:
    if args.bootstrap < 0:
        raise UserError(f"expected a count >= 0, got {args.bootstrap}", field="--bootstrap")
    cfg = load_study(args.config)
    results = Path(args.results)
    if not results.is_dir():
        raise UserError("not a directory", field=f"--results {results}")
    paths = build_report(cfg, results, args.out, n_boot=args.bootstrap)
    n_fig = sum(1 for k in paths if k.startswith("figure:"))
    n_tab = sum(1 for k in paths if k.startswith("table:"))
    print(f"[report] {paths['summary']} and {paths['html']} ({n_fig} figures, {n_tab} tables)", file=sys.stderr)
    return 0
