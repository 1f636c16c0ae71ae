"""The study, attribution and headline sections: dicts the templates show, built from the inputs.

Variance shares are shown as percentages of the total variance of the per-item score (the Shapley values
of ``reprogrid attribute``, which sum to v_all = R^2 of the full factorial model) and as percentages of
the explained, between-cell spread (Shapley / v_all).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from reprogrid.catalogue import factor_catalogue, level_text
from reprogrid.report.fmt import Est, finite, num
from reprogrid.report.inputs import Inputs
from reprogrid.report.scores import Scores

SHARE_COLUMNS = ("eta2", "omega2", "shapley", "sobol_total", "ci_low", "ci_high", "noise_floor")


def _items_per_cell(ok: pd.DataFrame) -> str:
    n = pd.to_numeric(ok["n_items"], errors="coerce") if "n_items" in ok.columns else pd.Series(dtype=float)
    if not len(n):
        return "n/a"
    return f"{int(n.min())}" if n.min() == n.max() else f"{int(n.min())}\u2013{int(n.max())}"


def study_section(inp: Inputs, sc: Scores) -> dict:
    """The study at a glance: factors and their levels, fixed levels, cells, runs, items, tasks."""
    cat = factor_catalogue()
    cfg = inp.cfg
    factors = []
    for f in sc.factors:
        levels = sc.level_order(f, sc.cells[f].dropna().tolist())
        factors.append({"name": f, "stage": cat[f].stage if f in cat else "?",
                        "levels": ", ".join(level_text(v) for v in levels), "n": len(levels),
                        "doc": cat[f].doc if f in cat else "", "varies": f in sc.varying})
    fixed = [{"name": f, "level": level_text(cfg.factors[f][0])} for f in cfg.factors
             if f not in cfg.listed and f in cat]
    n_runs = sc.cells["generation_id"].nunique() if "generation_id" in sc.cells.columns else None
    failed_runs = (sc.failed["generation_id"].nunique() if "generation_id" in sc.failed.columns else 0)
    s = inp.samples
    item_key = (s["task"].astype(str) + "/" + s["item_id"].astype(str)) if "task" in s.columns and len(s) else \
        s.get("item_id", pd.Series(dtype=str))
    tasks = list(cfg.ruler.get("tasks", []))
    return {
        "name": cfg.raw.get("study", "study"),
        "description": " ".join(str(cfg.raw.get("description", "")).split()),
        "factors": factors, "fixed": fixed,
        "n_cells": len(sc.cells), "n_ok": len(sc.ok), "n_failed": len(sc.failed),
        "n_planned": len(inp.grid) if inp.grid is not None else None,
        "n_runs": n_runs, "n_failed_runs": failed_runs,
        "n_samples": len(s), "n_items": int(item_key.nunique()) if len(s) else 0,
        "items_per_cell": _items_per_cell(sc.ok),
        "tasks": ", ".join(tasks), "n_tasks": len(tasks), "n_items_per_task": cfg.ruler.get("n_items"),
        "models": ", ".join(level_text(m) for m in cfg.factors.get("model", [])),
    }


def _share_row(r, nj: dict, v_all: float) -> dict:
    """One factor's share (of the total variance and of the explained part) against its noise floor."""
    floor = nj.get("noise_floor", getattr(r, "noise_floor", np.nan))
    if "above_noise" in nj:
        above = bool(nj["above_noise"])
    elif finite(floor):
        above = bool(r.shapley > floor)
    else:
        above = None
    est = Est(r.shapley, r.ci_low if finite(r.ci_low) else None, r.ci_high if finite(r.ci_high) else None, "%")
    expl = Est(r.shapley / v_all if finite(v_all) and v_all > 0 else float("nan"), unit="%")
    return {
        "effect": r.effect, "share": est, "explained": expl,
        "explained_txt": (num(expl.value * 100, est.d) + "%") if finite(expl.value) else "n/a",
        "floor": floor, "floor_txt": (num(floor * 100, max(1, est.d)) + "%") if finite(floor) else "n/a",
        "above": above, "p_value": nj.get("p_value"),
        "eta2": r.eta2, "omega2": getattr(r, "omega2", np.nan), "sobol_total": getattr(r, "sobol_total", np.nan),
    }


def _residual(resid: pd.DataFrame, v_all: float) -> Est | None:
    if not len(resid):
        return None
    rr = resid.iloc[0]
    return Est(float(rr["shapley"]) if finite(rr["shapley"]) else 1 - v_all,
               rr["ci_low"] if finite(rr["ci_low"]) else None,
               rr["ci_high"] if finite(rr["ci_high"]) else None, "%")


def _interactions(inter: pd.DataFrame) -> list[dict]:
    rows = [{"effect": r.effect, "a": r.effect.split(":")[0], "b": r.effect.split(":")[1], "eta2": r.eta2,
             "omega2": getattr(r, "omega2", np.nan)} for r in inter.itertuples(index=False)]
    rows.sort(key=lambda r: -(r["eta2"] if finite(r["eta2"]) else -1))
    return rows


def attribution_section(inp: Inputs) -> dict:
    """Factor shares (largest first), the residual, two-way interactions and the attribution settings."""
    t = inp.shares.copy()
    t["effect"] = t["effect"].astype(str)
    for c in SHARE_COLUMNS:
        if c in t.columns:
            t[c] = pd.to_numeric(t[c], errors="coerce")
    is_resid = t["effect"].str.lower() == "residual"
    is_inter = t["effect"].str.contains(":")
    fac = t[~is_inter & ~is_resid]
    fac = fac[fac["shapley"].notna()].sort_values("shapley", ascending=False, kind="stable")
    js = inp.shares_json or {}
    v_all = js.get("v_all")
    if not finite(v_all):
        v_all = float(fac["shapley"].sum()) if len(fac) else float("nan")
    noise_js = (js.get("noise_floor") or {}).get("factors") or {}
    rows = [_share_row(r, noise_js.get(r.effect, {}), v_all) for r in fac.itertuples(index=False)]
    boot = js.get("bootstrap") or {}
    v_iv = boot.get("v_all_interval")
    return {
        "rows": rows, "residual": _residual(t[is_resid], v_all), "interactions": _interactions(t[is_inter & ~is_resid]),
        "v_all": Est(v_all, *(v_iv if v_iv and all(finite(x) for x in v_iv) else (None, None)), unit="%"),
        "family": js.get("family", "gaussian"), "n_rows": js.get("n_rows"), "n_cells": js.get("n_cells"),
        "balanced": js.get("balanced"), "seed": js.get("seed"), "replicates": boot.get("replicates"),
        "permutations": (js.get("noise_floor") or {}).get("permutations"),
        "method_v": (js.get("method") or {}).get("v"),
        "has_ci": any(r["share"].has_ci for r in rows),
        "has_floor": any(finite(r["floor"]) for r in rows),
    }


def _noise_texts(top: dict, permutations) -> tuple[str, str]:
    """What the noise floor says about the top factor: a sentence and a short phrase."""
    if top["above"] is True:
        p = top["p_value"]
        ptxt = f", permutation p = {p:.2g}" if finite(p) else ""
        if finite(p) and permutations and abs(p * (1 + permutations) - 1) < 0.01:
            ptxt += f", the smallest {permutations} permutations can give"
        return (f"It clears the noise floor: a factor with no effect gets at most {top['floor_txt']} "
                f"at this sample size (95th percentile of label permutations{ptxt})."), "clears the noise floor"
    if top["above"] is False:
        return ("It is indistinguishable from noise: a factor with no effect gets up to "
                f"{top['floor_txt']} at this sample size, so the grid cannot say this factor matters."), \
            "indistinguishable from noise"
    return ("No noise floor was computed (attribute with noise-floor permutations to get one).",
            "noise floor not computed")


def headline(a: dict, advice: list[str] | None = None) -> dict:
    """The top factor, whether it clears the noise floor, and whether the runner-up is separated from it.
    ``advice``: the D-study sentences (``noise_section``), printed after a ranking that is not settled."""
    rows = a["rows"]
    if not rows:
        return {"available": False, "text": "The variance shares table has no factor rows: nothing varies."}
    top = rows[0]
    runner = rows[1] if len(rows) > 1 else None
    above = [r for r in rows if r["above"]]
    h = {"available": True, "top": top, "runner": runner, "n_above": len(above),
         "none_above": a["has_floor"] and not above}
    h["noise_txt"], h["noise_short"] = _noise_texts(top, a.get("permutations"))
    design = " Design: " + "; ".join(advice) + "." if advice else ""
    if top["above"] is False:
        h["noise_txt"] += design
    if runner is not None:
        both = top["share"].has_ci and runner["share"].has_ci
        sep = both and top["share"].lo > runner["share"].hi
        h["separated"] = sep
        h["runner_txt"] = (f"Runner-up: {runner['effect']}, {runner['share'].full}"
                           + ("; the two intervals do not overlap, so the ranking is clear." if sep
                              else "; the intervals overlap, so the order of the two is not settled." if both
                              else "."))
        if both and not sep:
            h["runner_txt"] += design
    h["below"] = [r["effect"] for r in rows if r["above"] is False]
    return h
