"""Protocol pitfalls measured: how far each single protocol mistake moves the score.

A study names its pitfall factors and the *reference* (correct) level of each in ``pitfalls.reference``,
e.g. ``{answer_prefix: kept, template_family: own, max_gen_toks: 0}``. From the scored grid:

* the **best reference cell** ``b``: the highest-scoring cell with every pitfall factor at its reference level
  (the other factors free), among the cells scored on the most items: a scoring factor that keeps a subset of
  the items (``split: niah``) would otherwise pick an easy subset as "best", and every comparison from it
  (a mistake that only breaks the other tasks, the path to the worst cell) would mix item sets;
* for each pitfall level ``l`` of factor ``F``, **from the best**: the cell equal to ``b`` except ``F = l`` (one
  mistake made on the best protocol), its score and the paired difference to ``b``;
* **marginal**: over every reference cell whose ``F = l`` twin exists (all other factors equal), the paired
  difference of the two equal-weight means: the mistake's average effect across the rest of the grid;
* the **worst cell** of the grid (among the same widest-item-set cells), and which mistakes it carries;
* the **path** from the best reference cell to the worst cell: :func:`reprogrid.explain.explain` splits the
  gap between them into exact Shapley contributions of the factors on which they differ (pitfall factors,
  context length, metric...), each with its item-bootstrap interval and paired test; cells the design did not
  run on that path are named instead.

Every interval is the item bootstrap of :class:`reprogrid.stats.ItemBootstrap` (items resampled jointly
across cells within task strata, so differences are paired on shared items). The population an interval
refers to: the same protocol cells evaluated on infinitely many items drawn by the same RULER generators
(fixed model, fixed seeds). A difference is called an effect only when its interval excludes zero;
otherwise it is reported as indistinguishable from item noise at this number of items. The interval is backed
by a test: the sign-flip permutation test of the per-item paired differences (each item's difference averaged
over the matched pairs; exact for small numbers of items), so an effect needs its interval to exclude zero *and*
p < 0.05 (with 4 items no p-value can go below 0.125, whatever the bootstrap says).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from reprogrid.catalogue import level_text
from reprogrid.errors import UserError
from reprogrid.explain import explain
from reprogrid.stats import (ITEM_SEP, LEVEL, Estimate, ItemBootstrap, fraction_scores, item_scores,
                             paired_permutation_p)

COLUMNS = ["factor", "level", "reference", "n_pairs", "n_items", "marginal", "marginal_low", "marginal_high", "p_value",
           "from_best_cell", "from_best", "from_best_low", "from_best_high", "drop", "drop_low", "drop_high",
           "verdict"]


@dataclass
class Setting:
    reference: dict  # factor -> reference level (as level text)
    n_boot: int
    seed: int
    aggregation: str = "task_mean"


def check_reference(reference: dict, factors: dict, where: str) -> None:
    """Each pitfall factor is a listed factor with at least two levels, and its reference is one of them."""
    for name, ref in reference.items():
        if name not in factors:
            raise UserError(f"'{name}' is not a factor of this study", field=f"{where}.{name}")
        levels = [level_text(v) for v in factors[name]]
        if len(levels) < 2:
            raise UserError(f"'{name}' has one level ({levels[0]}): a pitfall needs its reference and at least "
                            "one other level", field=f"{where}.{name}")
        if level_text(ref) not in levels:
            raise UserError(f"reference level {level_text(ref)!r} is not one of the levels "
                            f"{', '.join(levels)}", field=f"{where}.{name}")


def _text_frame(cells: pd.DataFrame, names) -> pd.DataFrame:
    return pd.DataFrame({n: cells[n].map(level_text) for n in names}, index=cells.index)


def _twins(ok: pd.DataFrame, text: pd.DataFrame, factor: str, ref: str, level: str) -> list[tuple[str, str]]:
    """(reference cell, cell with factor = level) pairs equal in every other listed factor."""
    others = [c for c in text.columns if c != factor]
    key = text[others].astype(str).agg("\x1f".join, axis=1) if others else pd.Series("", index=text.index)
    ref_by = dict(zip(key[text[factor] == ref], ok.loc[text[factor] == ref, "cell_id"]))
    lev = ok.loc[text[factor] == level, "cell_id"]
    return [(ref_by[k], c) for k, c in zip(key[text[factor] == level], lev) if k in ref_by]


def _verdict(d: Estimate, n_items: int, p: float) -> str:
    if not d.has_ci:
        return "no interval (too few replicates)"
    pts = d.value * 100
    if (d.low > 0 or d.high < 0) and p < 0.05:
        direction = "raises" if pts > 0 else "lowers"
        return f"an effect: {direction} the score by {abs(pts):.1f} points"
    return f"indistinguishable from item noise at {n_items} items per cell"


def measure(samples: pd.DataFrame, cells: pd.DataFrame, listed: list[str], s: Setting) -> dict:
    """The pitfall table and the best and worst cells (0-1 scale) of a scored grid."""
    ok = cells[cells["status"].astype(str) == "ok"].reset_index(drop=True)
    names = [n for n in listed if n in ok.columns]
    text = _text_frame(ok, names)
    boot = ItemBootstrap.from_tables(samples, ok, s.n_boot, s.seed, LEVEL, default=s.aggregation)
    per_item = item_scores(samples)
    ok = ok[ok["cell_id"].astype(str).map(lambda c: boot.has([c]))].reset_index(drop=True)
    text = _text_frame(ok, names)
    if ok.empty:
        raise UserError("no scored cell: nothing to measure", field="pitfalls")
    score = {str(c): boot.estimate([c]).value for c in ok["cell_id"]}
    at_ref = pd.Series(True, index=ok.index)
    for f, ref in s.reference.items():
        at_ref &= text[f] == level_text(ref)
    if not at_ref.any():
        raise UserError("no scored cell has every pitfall factor at its reference level", field="pitfalls.reference")
    widest = max(boot.n_items[str(c)] for c in ok["cell_id"])
    full = ok["cell_id"].astype(str).map(lambda c: boot.n_items[c] == widest)
    if not (at_ref & full).any():
        raise UserError(f"no cell scored on all {widest} items has every pitfall factor at its reference level",
                        field="pitfalls.reference")
    ref_cells = ok.loc[at_ref & full, "cell_id"].astype(str)
    best = max(ref_cells, key=lambda c: (score[c], c))
    rows = [_row(boot, per_item, ok, text, f, level_text(ref), lv, best)
            for f, ref in s.reference.items()
            for lv in sorted(set(text[f]) - {level_text(ref)})]
    worst = min(ok.loc[full, "cell_id"].astype(str), key=lambda c: (score[c], c))
    return {"rows": rows, "best": _cell_info(boot, ok, text, best, s.reference),
            "worst": _cell_info(boot, ok, text, worst, s.reference)}


def _paired_p(per_item: pd.DataFrame, pairs: list[tuple[str, str]], seed: int = 0) -> tuple[float, int]:
    """Sign-flip p-value of the per-item differences (each item's mean over the pairs) and the item count."""
    a = per_item.reindex([x for x, _ in pairs]).to_numpy(float)
    b = per_item.reindex([y for _, y in pairs]).to_numpy(float)
    with np.errstate(invalid="ignore"):
        d = np.nanmean(b - a, axis=0) if len(pairs) else np.array([])
    d = d[np.isfinite(d)]
    return paired_permutation_p(d, seed=seed), int(len(d))


def _row(boot: ItemBootstrap, per_item: pd.DataFrame, ok: pd.DataFrame, text: pd.DataFrame, f: str, ref: str,
         lv: str, best: str) -> dict:
    pairs = _twins(ok, text, f, ref, lv)
    marg = boot.difference([a for a, _ in pairs], [b for _, b in pairs]) if pairs else Estimate(float("nan"))
    twin = next((b for a, b in pairs if a == best), None)
    from_best = boot.estimate([twin]) if twin else Estimate(float("nan"))
    drop = boot.difference([best], [twin]) if twin else Estimate(float("nan"))
    p, n_items = _paired_p(per_item, pairs, boot.seed) if pairs else (1.0, 0)
    return {"factor": f, "level": lv, "reference": ref, "n_pairs": len(pairs), "n_items": n_items,
            "marginal": marg.value, "marginal_low": marg.low, "marginal_high": marg.high, "p_value": p,
            "from_best_cell": twin or "", "from_best": from_best.value, "from_best_low": from_best.low,
            "from_best_high": from_best.high, "drop": drop.value, "drop_low": drop.low, "drop_high": drop.high,
            "verdict": _verdict(marg, n_items, p) if pairs else "no matched pair of cells"}


def _cell_info(boot: ItemBootstrap, ok: pd.DataFrame, text: pd.DataFrame, cell: str, reference: dict) -> dict:
    i = ok.index[ok["cell_id"].astype(str) == cell][0]
    e = boot.estimate([cell])
    levels = {n: text.at[i, n] for n in text.columns}
    mistakes = {f: levels[f] for f, ref in reference.items() if levels.get(f) != level_text(ref)}
    return {"cell_id": cell, "score": e.value, "low": e.low, "high": e.high, "levels": levels,
            "mistakes": mistakes}


def single_mistake_answer(result: dict) -> str:
    """One sentence: which single mistake moves the best reference cell furthest, and how far."""
    rows = [r for r in result["rows"] if r["from_best_cell"] and r["drop"] == r["drop"]]
    best = result["best"]
    if not rows:
        return "No single-mistake twin of the best reference cell is in the grid."
    r = min(rows, key=lambda r: (r["drop"], r["factor"], r["level"]))
    ci = (f" (95% CI {r['drop_low'] * 100:.1f} to {r['drop_high'] * 100:.1f})"
          if r["drop_low"] is not None and r["drop_high"] is not None else "")
    return (f"From the best reference cell ({best['score'] * 100:.1f}), the single mistake that costs most is "
            f"{r['factor']}={r['level']} (reference {r['reference']}): {r['from_best'] * 100:.1f}, a change of "
            f"{r['drop'] * 100:+.1f} points{ci}.")


def best_to_worst(samples: pd.DataFrame, cells: pd.DataFrame, result: dict, n_boot: int, seed: int) -> dict:
    """The Shapley path from the best reference cell to the worst cell (``explain`` on the samples table).

    Levels are those of the two cells; the response is the per-sample score on the 0-1 scale, items are
    (task, item_id), so every contribution is paired on shared items. Returns ``explain``'s summary (its
    ``low`` is the best cell, its ``high`` the worst) with the two cell ids.
    """
    best, worst = result["best"], result["worst"]
    differing = [f for f in best["levels"] if best["levels"][f] != worst["levels"].get(f)]
    out = {"from": best["cell_id"], "to": worst["cell_id"]}
    if not differing:
        return {**out, "differing": [], "complete": True, "contributions": [], "missing_cells": [], "gap": 0.0}
    cols = list(best["levels"])
    ok = cells[cells["status"].astype(str) == "ok"]
    df = samples.drop(columns=[c for c in cols if c in samples.columns]).merge(
        ok[["cell_id", *cols]], on="cell_id", how="inner")
    task = df["task"].astype(str) if "task" in df.columns else "all"
    df = df.assign(_y=fraction_scores(df), _item=task + ITEM_SEP + df["item_id"].astype(str))
    df = df[np.isfinite(df["_y"].to_numpy(float))]
    res = explain(df, "_y", {c: best["levels"][c] for c in cols}, {c: worst["levels"][c] for c in cols},
                  item="_item", bootstrap=n_boot, seed=seed, factors=cols, level=LEVEL)
    return {**out, **res.summary()}


def path_answer(path: dict) -> str:
    """One sentence: how the gap from the best reference cell to the worst cell splits over the factors."""
    if not path.get("differing"):
        return "The best reference cell is also the worst cell: no path to explain."
    if not path.get("complete"):
        return (f"The path from the best reference cell to the worst cell crosses {len(path['missing_cells'])} "
                f"cell(s) the design did not run; add them under `include:` to split the gap.")
    parts = []
    for c in sorted(path["contributions"], key=lambda c: c["contribution"]):
        ci = (f" [{c['ci_low'] * 100:+.1f}, {c['ci_high'] * 100:+.1f}]"
              if c.get("ci_low") is not None and c.get("ci_high") is not None else "")
        parts.append(f"{c['factor']} {level_text(c['low_level'])} -> {level_text(c['high_level'])}: "
                     f"{c['contribution'] * 100:+.1f}{ci}")
    return (f"From the best reference cell ({path['low_value'] * 100:.1f}) to the worst cell "
            f"({path['high_value'] * 100:.1f}), {path['gap'] * 100:+.1f} points split (Shapley, paired on items) as: "
            + "; ".join(parts) + ".")
