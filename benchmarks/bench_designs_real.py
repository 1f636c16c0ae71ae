"""A real grid and its half fraction (issue #16): the full study's attribution against the design's.

The full study (``configs/studies/designs_real.yaml``, 16 generation runs of the embedded model) is run by the
workflow; its results folder holds the samples and ``attribution/variance_shares.csv``. The half fraction is
``configs/studies/designs_real_half.yaml``: the same factors with ``design: {type: fractional, resolution:
IV}``. A run's records do not depend on which other runs exist, so the half's analysis is made from the full
study's samples of the generation ids that the half's own grid (``reprogrid.grid.expand`` of its config, the
design machinery) selects, through ``reprogrid.attribution.incomplete.estimate`` with the workflow's settings
(the varying factors, the study seed, 200 coefficient draws, 100 null draws per factor, 10 held-out folds).
With ``--half-results`` it reads the half study's own ``attribution/design`` outputs instead (a workflow run of
the half config whose generations were taken from the full study's folder: same ids, resumed).

Printed: per factor the full grid's share (``shapley``, bootstrap) and noise floor, the design's bias-corrected
share (``shapley_adj``) and noise floor, their difference; the largest difference; whether the factors that
clear the full grid's noise floor come out of the design in the same order; the unrun cells' predicted means
against the means the full grid measured for them (coverage of the 95% intervals).

    nice -n 19 python benchmarks/bench_designs_real.py --full RESULTS --half-config CONFIG [--half-results DIR]
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd

from reprogrid import grid
from reprogrid.attribution.incomplete import estimate
from reprogrid.catalogue import level_text
from reprogrid.io import read_table
from reprogrid.layout import Layout
from reprogrid.study import load_study


def design_table(table: pd.DataFrame) -> pd.DataFrame:
    t = table.copy()
    t["factor"] = t["effect"].astype(str).str.split(" = ").str[0]
    return t.set_index("factor")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", required=True, help="results folder of the full study")
    ap.add_argument("--half-config", required=True)
    ap.add_argument("--half-results", help="results folder of a workflow run of the half config")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    full = Layout(args.full)
    samples = read_table(full.samples)
    cfg = load_study(args.half_config)
    cells = grid.expand(cfg)
    factors = [f for f in cfg.listed if cells[f].nunique() > 1]
    ids = set(cells["generation_id"])
    t0 = time.perf_counter()
    if args.half_results:
        est_table = read_table(Layout(args.half_results).design_shares)
        predicted = read_table(Layout(args.half_results).predicted_cells, text_columns=factors)
        how = f"the half study's own outputs ({args.half_results})"
    else:
        rows = samples[samples["generation_id"].isin(ids)]
        res = estimate(rows, "score", factors, draws=200, seed=int(cfg.seed), noise_draws=100, folds=10)
        est_table, predicted = res.table, res.predicted
        how = "estimate() on the full study's samples of the half's generation ids"
    t_est = time.perf_counter() - t0
    ft = read_table(full.shares).set_index("effect")
    et = design_table(est_table)
    out = {"how": how, "generation_ids": len(ids), "full_generation_ids": int(samples["generation_id"].nunique()),
           "factors": {}, "estimate_s": round(t_est, 2)}
    for f in factors:
        out["factors"][f] = {"full": float(ft.loc[f, "shapley"]), "full_adj": float(ft.loc[f, "shapley_adj"]),
                             "full_floor": float(ft.loc[f, "noise_floor"]),
                             "design": float(et.loc[f, "shapley_adj"]), "design_plugin": float(et.loc[f, "shapley"]),
                             "design_floor": float(et.loc[f, "noise_floor"]),
                             "design_ci": [float(et.loc[f, "adj_ci_low"]), float(et.loc[f, "adj_ci_high"])]}
    fs = out["factors"]
    clear_full = sorted([f for f in factors if fs[f]["full"] > fs[f]["full_floor"]], key=lambda f: -fs[f]["full"])
    clear_design = sorted([f for f in factors if fs[f]["design"] > fs[f]["design_floor"]],
                          key=lambda f: -fs[f]["design"])
    out["max_diff"] = max(abs(fs[f]["design"] - fs[f]["full"]) for f in factors)
    out["max_diff_adj"] = max(abs(fs[f]["design"] - fs[f]["full_adj"]) for f in factors)
    out["clear_full"], out["clear_design"] = clear_full, clear_design
    out["same_order"] = sorted(clear_full, key=lambda f: -fs[f]["design"]) == clear_full
    out["aliased"] = [e for e in est_table["effect"].astype(str) if " = " in e]
    # unrun cells: the design's predictions against what the full grid measured there
    measured = samples[samples["status"].astype(str) == "ok"] if "status" in samples.columns else samples
    key = lambda df: df[factors].map(level_text).agg("\t".join, axis=1)  # noqa: E731
    cell_mean = measured.groupby(key(measured))["score"].mean()
    unrun = predicted[predicted["status"].astype(str) == "predicted"]
    truth = key(unrun).map(cell_mean)
    inside = (unrun["ci_low"] <= truth) & (truth <= unrun["ci_high"])
    out["unrun"] = {"cells": int(len(unrun)), "covered": int(inside.sum()),
                    "max_abs_error": float((unrun["predicted"] - truth).abs().max()),
                    "estimable": int(unrun["estimable"].astype(str).str.lower().isin(["true", "1"]).sum())}
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
