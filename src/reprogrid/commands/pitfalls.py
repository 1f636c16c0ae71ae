"""`reprogrid pitfalls`: each protocol mistake measured against the reference protocol, paired on items."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reprogrid.catalogue import section_defaults
from reprogrid.errors import UserError
from reprogrid.io import read_table, write_csv, write_json
from reprogrid.pitfalls import COLUMNS, Setting, best_to_worst, measure, path_answer, single_mistake_answer
from reprogrid.stats import LEVEL
from reprogrid.study import load_study

HELP = "measure each protocol mistake against the reference protocol, paired on items"


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="study config with a `pitfalls:` section")
    parser.add_argument("--samples", required=True, help="samples table (tables/samples.parquet)")
    parser.add_argument("--cells", required=True, help="cells table (tables/cells.parquet)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (pitfalls.csv, pitfalls.json)")


def run(args) -> int:
    cfg = load_study(args.config)
    if not cfg.raw.get("pitfalls"):
        raise UserError("the study has no `pitfalls:` section", field=f"{cfg.path}: pitfalls")
    section = {**section_defaults("pitfalls"), **cfg.raw["pitfalls"]}
    setting = Setting(reference=dict(section["reference"]), n_boot=int(section["bootstrap"]), seed=cfg.seed,
                      aggregation=str(cfg.factors.get("aggregation", ["task_mean"])[0]))
    samples = read_table(args.samples, what="samples")
    cells = read_table(args.cells, what="cells")
    res = measure(samples, cells, list(cfg.listed), setting)
    answer = single_mistake_answer(res)
    path = best_to_worst(samples, cells, res, setting.n_boot, setting.seed)
    out = Path(args.out)
    write_csv(pd.DataFrame(res["rows"], columns=COLUMNS), out / "pitfalls.csv", float_format="%.10g")
    write_json(out / "pitfalls.json", {
        "reference": setting.reference, "bootstrap": setting.n_boot, "seed": setting.seed, "level": LEVEL,
        "interval": "item bootstrap (items resampled jointly across cells within task strata; paired "
                    "differences); population: the same cells on infinitely many items from the same generators",
        "scale": "fraction (0-1)", "best": res["best"], "worst": res["worst"], "rows": res["rows"],
        "answer": answer, "path": path, "path_answer": path_answer(path)})
    print(answer)
    print(path_answer(path))
    for r in res["rows"]:
        print(f"  {r['factor']}={r['level']} (vs {r['reference']}): marginal {r['marginal'] * 100:+.1f} points; "
              f"{r['verdict']}")
    return 0
