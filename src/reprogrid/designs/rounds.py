"""Adaptive designs: the follow-up rounds after the screening fraction.

The rounds live in ``grid/rounds.json`` under the study's results (``Layout.design_rounds``): a list of
``{"round": i, "runs": [{factor: level, ...}, ...], "picked_by": ..., "generation_ids": [...]}``. The grid of an
adaptive study is its screening fraction plus every recorded round, so after ``reprogrid adapt`` records a
round, the next Snakemake run is an ordinary run over the grown grid (finished generations are kept).

A round picks, among the design-factor combinations not yet run, those whose predicted cell means (from
``reprogrid estimate``'s ``predicted_cells.csv``) are least certain: predictions the runs cannot estimate
first (they depend on how aliased effects are assigned), then the widest mean interval (averaged over the
scoring cells of the run), ties in a seeded order; ``follow_up`` runs per round, never past the budget.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from reprogrid.catalogue import level_text
from reprogrid.config import Config
from reprogrid.errors import UserError
from reprogrid.io import read_json, write_json
from reprogrid.layout import Layout


def rounds_path(cfg: Config) -> Path:
    return Path(Layout(cfg.results).design_rounds)


def read_rounds(cfg: Config, plan) -> list[dict]:
    """The recorded rounds, each with ``runs_key``: its runs as level tuples in the plan's factor order."""
    path = rounds_path(cfg)
    if not path.is_file():
        return []
    data = read_json(path, what="design rounds")
    where = f"{path}: rounds"
    if not isinstance(data, dict) or not isinstance(data.get("rounds"), list):
        raise UserError("expected a mapping with a list `rounds`", field=str(path))
    by_text = [{level_text(x): x for x in lv} for lv in plan.levels]
    out = []
    for i, r in enumerate(data["rounds"]):
        keys = []
        for run in r.get("runs", []):
            try:
                keys.append(tuple(by_text[j][level_text(run[f])] for j, f in enumerate(plan.factors)))
            except (KeyError, TypeError):
                raise UserError(f"run {run!r} does not give a listed level of every design factor "
                                f"({', '.join(plan.factors)}); was the config edited after this round?",
                                field=f"{where}[{i}]") from None
        out.append({**r, "runs_key": keys})
    return out


def next_round(cfg: Config, plan, predicted: pd.DataFrame) -> list[tuple]:
    """The runs of the next round (level tuples in the plan's factor order); empty at the budget."""
    s = plan.settings
    room = int(s["budget"]) - plan.n_runs
    if room <= 0:
        return []
    missing = [f for f in plan.factors if f not in predicted.columns]
    if missing:
        raise UserError(f"the predicted cells lack the design factor(s) {', '.join(missing)}", field="--predicted")
    done = plan.runs()
    candidates = [c for c in itertools.product(*plan.levels) if c not in done]
    if not candidates:
        return []
    key = predicted[plan.factors].map(level_text).agg("\t".join, axis=1)
    width = (predicted["ci_high"] - predicted["ci_low"]).groupby(key).mean()
    unsure = (~predicted["estimable"].astype(str).str.lower().isin(["true", "1"])).groupby(key).any()
    rng = np.random.default_rng(int(s["seed"]) + len(plan.rounds) + 1)
    order = rng.permutation(len(candidates))
    scored = []
    for rank, i in enumerate(order):
        c = candidates[i]
        k = "\t".join(level_text(x) for x in c)
        scored.append((not bool(unsure.get(k, True)), -float(width.get(k, np.inf)), rank, c))
    scored.sort()
    return [c for *_, c in scored[:min(room, int(s.get("follow_up", 8)))]]


def record_round(cfg: Config, plan, runs: list[tuple], generation_ids: list[str]) -> Path:
    path = rounds_path(cfg)
    old = read_json(path, what="design rounds")["rounds"] if path.is_file() else []
    old.append({"round": len(old) + 1,
                "runs": [{f: c[j] for j, f in enumerate(plan.factors)} for c in runs],
                "picked_by": "least certain predictions: not estimable first, then the widest mean interval",
                "generation_ids": sorted(generation_ids),
                "runs_after": plan.n_runs + len(runs), "budget": plan.settings["budget"]})
    write_json(path, {"rounds": old})
    return path
