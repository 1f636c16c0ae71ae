"""Cell scores and their intervals: the cells split into ok and failed, the factors that vary, and the
scores the report shows per level, per context length and per cell.

Scores are on the 0-1 scale (cells on the percent scale converted, :func:`reprogrid.stats.fraction_scores`).
Every interval is :class:`reprogrid.stats.ItemBootstrap` built by ``from_tables`` (items resampled jointly
across cells within tasks, each cell aggregated its own way, seeded by the study seed): the bootstrap the
claims verdicts use, so both print the same interval for the same reading.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from reprogrid.catalogue import level_sort_key, level_text
from reprogrid.report.fmt import Est
from reprogrid.report.inputs import Inputs
from reprogrid.stats import LEVEL, ItemBootstrap, fraction_scores

SCORE_COLUMNS = ["factor", "level", "n_cells", "score", "ci_low", "ci_high", "est"]


def level_order(cfg, factor: str, values) -> list:
    """The distinct ``values`` in the config's order of the factor's levels, then any others sorted."""
    present = list(dict.fromkeys(values))
    wanted = [level_text(v) for v in cfg.factors.get(factor, [])]
    key = {level_text(v): v for v in present}
    ordered = [key[w] for w in wanted if w in key]
    rest = [v for v in present if level_text(v) not in wanted]
    return ordered + sorted(rest, key=level_sort_key)


class Scores:
    """The study's cells (``ok`` and ``failed``), its listed and varying factors, and score estimates."""

    def __init__(self, inp: Inputs, n_boot: int):
        self.cfg = inp.cfg
        self.n_boot = n_boot
        cells = inp.cells.copy()
        cells["cell_id"] = cells["cell_id"].astype(str)
        self.cells = cells
        self.ok = cells[cells["status"].astype(str) == "ok"]
        self.failed = cells[cells["status"].astype(str) != "ok"]
        self.factors = [f for f in self.cfg.listed if f in cells.columns]
        self.varying = [f for f in self.factors if self.ok[f].nunique(dropna=True) > 1]
        fixed = self.cfg.factors.get("aggregation", ["task_mean"])[0]  # the level of cells without the column
        self._boot = ItemBootstrap.from_tables(inp.samples, cells, n_boot, self.cfg.seed, LEVEL, default=fixed)

    def estimate(self, cell_ids) -> Est:
        """The equal-weight mean score of these cells with its item-bootstrap interval."""
        e = self._boot.estimate(cell_ids)
        return Est(e.value, e.low, e.high)

    def level_order(self, factor: str, values) -> list:
        return level_order(self.cfg, factor, values)


def main_effects(sc: Scores) -> pd.DataFrame:
    """Mean score of the ok cells at each level of each varying factor."""
    rows = []
    ok = sc.ok
    for f in sc.varying:
        for lv in sc.level_order(f, ok[f].dropna().tolist()):
            ids = ok.loc[ok[f].map(level_text) == level_text(lv), "cell_id"].tolist()
            e = sc.estimate(ids)
            rows.append({"factor": f, "level": level_text(lv), "n_cells": len(ids), "score": e.value,
                         "ci_low": e.lo, "ci_high": e.hi, "est": e})
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def by_context(sc: Scores) -> pd.DataFrame | None:
    """Mean score per context length within each (model, quantization); None without the column."""
    ok = sc.ok
    if "context_length" not in ok.columns:
        return None
    groups = [g for g in ("model", "quantization") if g in ok.columns]
    rows = []
    keys = (ok[groups].drop_duplicates() if groups else pd.DataFrame([{}]))
    order = {g: [level_text(v) for v in sc.level_order(g, ok[g].tolist())] for g in groups}
    keys = sorted((tuple(level_text(k[g]) for g in groups) for _, k in keys.iterrows()),
                  key=lambda t: tuple(order[g].index(v) for g, v in zip(groups, t)))
    for key in keys:
        m = pd.Series(True, index=ok.index)
        for g, v in zip(groups, key):
            m &= ok[g].map(level_text) == v
        sub = ok[m]
        for L in sc.level_order("context_length", sub["context_length"].tolist()):
            ids = sub.loc[sub["context_length"] == L, "cell_id"].tolist()
            e = sc.estimate(ids)
            rows.append({**dict(zip(groups, key)), "context_length": int(L), "n_cells": len(ids),
                         "score": e.value, "ci_low": e.lo, "ci_high": e.hi, "est": e})
    return pd.DataFrame(rows)


def cell_table(sc: Scores) -> pd.DataFrame:
    """Every cell (failed ones too) with its levels, score and interval."""
    rows = []
    for r in sc.cells.itertuples(index=False):
        d = r._asdict()
        ok = d["status"] == "ok"
        e = sc.estimate([d["cell_id"]]) if ok else Est(float("nan"))
        rows.append({"cell_id": d["cell_id"], **{f: level_text(d[f]) for f in sc.factors},
                     "generation_id": d.get("generation_id", ""), "status": d["status"],
                     "score": fraction_scores(pd.DataFrame([d])).iloc[0] if ok else np.nan,
                     "ci_low": e.lo, "ci_high": e.hi, "n_items": d.get("n_items"),
                     "n_truncated": d.get("n_truncated"), "reason": d.get("reason", "") or ""})
    return pd.DataFrame(rows)
