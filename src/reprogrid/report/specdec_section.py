"""The speculative decoding section: measured and predicted speed-up and acceptance per task (per
drafter-verifier pair when there are several), the disparity of the speed-up across tasks, and the mitigation's
before/after (:mod:`reprogrid.report.mitigation_section`) when it ran."""

from __future__ import annotations

from typing import Any

import pandas as pd

from reprogrid.report.fmt import Est, decimals_for, finite
from reprogrid.report.inputs import Inputs
from reprogrid.report.mitigation_section import mitigation_section


def format_disparity(dis: dict) -> dict:
    """A disparity.json entry (max/min ratio, CV, their intervals) as the report prints it."""
    r, rci = dis.get("max_min_ratio"), dis.get("max_min_ratio_ci") or [None, None]
    cv, cvci = dis.get("cv"), dis.get("cv_ci") or [None, None]
    dr = decimals_for(*rci, scale=1, default=2) if all(finite(x) for x in rci) else 2
    dc = decimals_for(*cvci, scale=1, default=2) if all(finite(x) for x in cvci) else 2
    return {
        "value": dis.get("value"), "max_group": dis.get("max_group"), "min_group": dis.get("min_group"),
        "ratio": f"{r:.{dr}f}" if finite(r) else "n/a",
        "ratio_ci": f"{rci[0]:.{dr}f}\u2013{rci[1]:.{dr}f}" if all(finite(x) for x in rci) else "",
        "cv": f"{cv:.{dc}f}" if finite(cv) else "n/a",
        "cv_ci": f"{cvci[0]:.{dc}f}\u2013{cvci[1]:.{dc}f}" if all(finite(x) for x in cvci) else "",
        "ce_variance": f"{dis['ce_variance']:.4f}" if finite(dis.get("ce_variance")) else None,
        "ce_definition": dis.get("ce_variance_definition", ""), "n_boot": dis.get("n_boot"),
    }


def _mean(g: pd.DataFrame, col: str) -> float:
    return float(pd.to_numeric(g[col], errors="coerce").mean())


def _task_row(pair: str | None, task: str, g: pd.DataFrame, gd: dict, multi: bool) -> dict:
    sp = Est(float(gd.get("mean", _mean(g, "speedup_measured"))), gd.get("ci_low"), gd.get("ci_high"),
             unit="\u00d7", scale=1.0)
    return {"pair": pair, "task": task, "label": f"{pair}: {task}" if multi else task,
            "n": len(g), "speedup": sp,
            # the block-cost prediction E/(gamma c + r) when measured (CPU verification of a gamma+1 block
            # costs r single steps), else the textbook E/(gamma c + 1)
            "speedup_predicted": _mean(g, "speedup_predicted_block" if "speedup_predicted_block" in g.columns
                                       else "speedup_predicted"),
            "alpha_empirical": _mean(g, "alpha_empirical"), "alpha_analytic": _mean(g, "alpha_analytic"),
            "tokens_per_step": _mean(g, "tokens_per_step"),
            "expected_tokens_per_step": _mean(g, "expected_tokens_per_step"),
            "cross_entropy": _mean(g, "cross_entropy") if "cross_entropy" in g.columns else float("nan")}


def _rows(df: pd.DataFrame, dis: dict, pairs: list) -> list[dict]:
    multi = len(pairs) > 1
    by_pair = dis.get("by_pair") or {}
    rows = []
    for pair in pairs:
        sub = df if pair is None else df[df["pair"].astype(str) == pair]
        # one pair: the pooled groups; several: each pair's own (pooling them would mix verifiers)
        pdis = ((by_pair.get(pair) or {}).get("speedup") or {}) if multi else dis
        groups = pdis.get("groups") or {}
        for task, g in sub.groupby("task", sort=True):
            rows.append(_task_row(pair, str(task), g, groups.get(str(task), {}), multi))
    return rows


def specdec_section(inp: Inputs) -> dict | None:
    """None when the study has no speculative decoding; otherwise its rows and disparity."""
    if not inp.cfg.raw.get("specdec") and inp.specdec is None:
        return None
    out: dict[str, Any] = {"available": inp.specdec is not None, "notes": inp.notes.get("specdec", []),
                           "mitigation": mitigation_section(inp)}
    df = inp.specdec
    if df is None:
        return out
    dis = inp.disparity or {}
    pairs = [str(p) for p in df["pair"].drop_duplicates()] if "pair" in df.columns else [None]
    multi = len(pairs) > 1
    out["rows"] = _rows(df, dis, pairs)
    out["multi_pair"] = multi
    out["predicted_formula"] = ("E/(\u03b3c+r)" if "speedup_predicted_block" in df.columns
                                else "E/(\u03b3c+1)")
    out["n_prompts"] = len(df)
    out["gamma"] = ", ".join(str(x) for x in sorted(df["gamma"].dropna().unique())) if "gamma" in df.columns else "?"
    out["decoding"] = (", ".join(sorted(map(str, df["decoding"].dropna().unique())))
                       if "decoding" in df.columns else "?")
    if dis:
        by_pair = dis.get("by_pair") or {}
        out["disparity"] = format_disparity(dis)
        if multi:
            out["pair_disparity"] = [{"pair": p, **format_disparity(
                {**((by_pair.get(p) or {}).get("speedup") or {}), "ce_variance": None})}
                for p in pairs if (by_pair.get(p) or {}).get("speedup")]
    return out
