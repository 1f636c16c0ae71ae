"""Before/after comparison of two drafters measured on the same held-out prompts (one study table each).

For each measured value (acceptance, predicted and measured speed-up, cross-entropy): the disparity measures of
each table (:func:`reprogrid.specdec.disparity.disparity`, with their own intervals) and the *paired* change
after - before of each task's mean, of the mean over tasks, of the max/min ratio, of the coefficient of variation
and of the across-task population variance of the task means, each with a percentile interval. Paired: prompts
are resampled within their task jointly for both tables (:func:`reprogrid.stats.item_bootstrap_means`), so a
change is read on the same resampled prompts.

The fairness headline (reprogrid's own definition, as ``CE_VARIANCE_LABEL``: the paper's measure is not public):
the relative change of the across-task variance of the per-task mean cross-entropy H(p, q),
100 * (after - before) / before; negative = fairer. Printed next to the paper's reported ~12% improvement only
as context: the two measures are not the same formula.
"""

from __future__ import annotations

import numpy as np

from reprogrid.errors import UserError
from reprogrid.specdec.disparity import CE_VARIANCE_LABEL, CV_DEFINITION, disparity
from reprogrid.stats import LEVEL, item_bootstrap_means, percentile_interval

VALUES = ("alpha_analytic", "alpha_greedy", "speedup_predicted", "speedup_measured", "cross_entropy")
KEY = ["task", "prompt_id"]
FAIRNESS_LABEL = ("reprogrid's own fairness measure: relative change (%) of the across-task population variance "
                  "of the per-task mean drafter-verifier cross-entropy (" + CE_VARIANCE_LABEL + "); negative = "
                  "more even. Sandler et al. report ~12% average improvement of their (unpublished) measure.")


def _summaries(means: np.ndarray) -> dict[str, np.ndarray]:
    """Across-task summaries of task means (last axis = tasks): mean, max/min, cv, variance."""
    mu = means.mean(axis=-1)
    lo = means.min(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(lo > 0, means.max(axis=-1) / lo, np.nan)
        cv = np.where(mu != 0, means.std(axis=-1) / np.abs(mu), np.nan)
    return {"mean": mu, "max_min_ratio": ratio, "cv": cv, "variance": means.var(axis=-1)}


def _interval(reps: np.ndarray) -> list[float]:
    lo, hi = percentile_interval(reps[np.isfinite(reps)], LEVEL) if np.isfinite(reps).any() else (np.nan, np.nan)
    return [float(lo), float(hi)]


def paired_change(before, after, value: str, *, n_boot: int, seed: int) -> dict:
    """Point changes after - before (and intervals) of per-task means and across-task summaries of ``value``."""
    merged = before[KEY + [value]].merge(after[KEY + [value]], on=KEY, suffixes=("_before", "_after"))
    merged = merged[np.isfinite(merged[[f"{value}_before", f"{value}_after"]].astype(float)).all(axis=1)]
    if merged.empty:
        return {"value": value, "note": "no prompt has a finite value in both tables"}
    tasks = sorted(merged["task"].unique())
    rows = []
    for side in ("before", "after"):
        for t in tasks:
            rows.append(np.where(merged["task"] == t, merged[f"{value}_{side}"].astype(float), np.nan))
    values = np.vstack(rows)
    point = np.nanmean(values, axis=1).reshape(2, len(tasks))
    reps = item_bootstrap_means(values, n_boot, seed).reshape(n_boot, 2, len(tasks))
    out: dict = {"value": value, "tasks": {}, "n_prompts": int(len(merged))}
    for j, t in enumerate(tasks):
        out["tasks"][t] = {"before": float(point[0, j]), "after": float(point[1, j]),
                           "change": float(point[1, j] - point[0, j]),
                           "change_ci": _interval(reps[:, 1, j] - reps[:, 0, j]),
                           "n": int((merged["task"] == t).sum())}
    s_point = {side: _summaries(point[i]) for i, side in enumerate(("before", "after"))}
    s_reps = {side: _summaries(reps[:, i, :]) for i, side in enumerate(("before", "after"))}
    for name in ("mean", "max_min_ratio", "cv", "variance"):
        b, a = float(s_point["before"][name]), float(s_point["after"][name])
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = s_reps["after"][name] / s_reps["before"][name] - 1.0
        out[name] = {"before": b, "after": a, "change": a - b,
                     "change_ci": _interval(s_reps["after"][name] - s_reps["before"][name]),
                     "relative_change_pct": 100.0 * (a / b - 1.0) if b else float("nan"),
                     "relative_change_pct_ci": [100.0 * x for x in _interval(rel)]}
    return out


def verifier_outputs(before, after) -> dict:
    """Whether the verifier's greedy outputs are the same with either drafter: each table's assisted output equals
    its plain output (``outputs_identical``) and the plain outputs of the two tables are equal (``output_text``)."""
    merged = before[KEY + ["output_text", "outputs_identical"]].merge(
        after[KEY + ["output_text", "outputs_identical"]], on=KEY, suffixes=("_before", "_after"))
    same_plain = (merged["output_text_before"] == merged["output_text_after"])
    ok_before = merged["outputs_identical_before"].astype(bool)
    ok_after = merged["outputs_identical_after"].astype(bool)
    bad = merged.loc[~(same_plain & ok_before & ok_after), KEY]
    return {"identical": bool(len(bad) == 0 and len(merged) == len(before) == len(after)),
            "n_prompts": int(len(merged)), "assisted_equals_plain_before": bool(ok_before.all()),
            "assisted_equals_plain_after": bool(ok_after.all()), "plain_outputs_equal": bool(same_plain.all()),
            "differing": [f"{t}/{p}" for t, p in bad.itertuples(index=False)]}


def compare(before, after, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Disparity of each table and the paired changes (module docstring), the verifier-output check and the
    fairness headline."""
    if set(map(tuple, before[KEY].to_numpy())) != set(map(tuple, after[KEY].to_numpy())):
        raise UserError("the before and after tables hold different prompts", field="held-out prompts")
    out: dict = {"level": LEVEL, "n_boot": n_boot, "seed": seed, "cv_definition": CV_DEFINITION,
                 "fairness_definition": FAIRNESS_LABEL, "disparity": {}, "change": {}}
    for value in VALUES:
        if value not in before.columns or not np.isfinite(before[value].astype(float)).any():
            continue
        out["disparity"][value] = {side: disparity(df, value, n_boot=n_boot, seed=seed)
                                   for side, df in (("before", before), ("after", after))}
        out["change"][value] = paired_change(before, after, value, n_boot=n_boot, seed=seed)
    ce = out["change"].get("cross_entropy", {}).get("variance")
    out["fairness"] = ({"measure": "ce_variance", "before": ce["before"], "after": ce["after"],
                        "relative_change_pct": ce["relative_change_pct"],
                        "relative_change_pct_ci": ce["relative_change_pct_ci"],
                        "improvement_pct": -ce["relative_change_pct"], "paper_reported_improvement_pct": 12.0}
                       if ce else None)
    out["verifier_outputs"] = verifier_outputs(before, after)
    return out
