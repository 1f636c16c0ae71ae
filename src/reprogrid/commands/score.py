"""`reprogrid score`: score stored generations per cell and write the tidy tables (no model)."""

from __future__ import annotations

import sys
from pathlib import Path

HELP = "score stored generations per cell and write the tidy tables"


def add_arguments(p) -> None:
    p.add_argument("--config", required=True)
    p.add_argument("--manifests", nargs="+", required=True)
    p.add_argument("--samples", required=True, help="samples.parquet to write")
    p.add_argument("--cells", required=True, help="cells.parquet to write")
    p.add_argument("--provenance", help="provenance.json to write (default: beside --cells)")


def run(args) -> int:
    from reprogrid import grid, provenance
    from reprogrid.catalogue import factor_names
    from reprogrid.io import sha256_file, write_json, write_parquet
    from reprogrid.scoring import load_generations, score
    from reprogrid.study import load_study

    cfg = load_study(args.config)
    cells_grid = grid.expand(cfg)
    records, failed = load_generations([Path(m) for m in args.manifests])
    defaults = {n: cfg.factors[n][0] for n in factor_names()}
    samples, cells = score(cells_grid, records, failed, defaults)
    write_parquet(samples, args.samples)
    write_parquet(cells, args.cells)
    write_json(args.provenance or Path(args.cells).with_name("provenance.json"), provenance.stamp(
        cfg, generations={str(m): sha256_file(m) for m in sorted(args.manifests)},
        tables={Path(p).name: sha256_file(p) for p in (args.samples, args.cells)}))
    ok = (cells["status"] == "ok").sum()
    print(f"[score] {len(cells)} cells ({ok} ok, {len(cells) - ok} failed), {len(samples)} sample rows",
          file=sys.stderr)
    return 0
