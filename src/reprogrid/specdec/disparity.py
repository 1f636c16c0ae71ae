"""Disparity across tasks: per-group means with percentile bootstrap intervals, the max/min ratio and the
coefficient of variation of the group means, and reprogrid's cross-entropy variance."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from reprogrid.errors import UserError

CE_VARIANCE_LABEL = (
    "reprogrid's own definition: population variance (ddof=0) across groups of the per-group mean "
    "drafter-verifier cross-entropy H(p, q) in nats per token; not the formula of Sandler et al. (not public)"
)
CV_DEFINITION = "population std (ddof=0) of the group means divided by |mean of the group means|"


def _cv(means: np.ndarray) -> float:
    mu = float(np.mean(means))
    return float(np.std(means, ddof=0) / abs(mu)) if mu != 0 else float("nan")


def _ratio(means: np.ndarray) -> float:
    lo = float(np.min(means))
    return float(np.max(means) / lo) if lo > 0 else float("nan")


def _check_arguments(df, value: str, by: str, n_boot: int, level: float) -> None:
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise UserError("expected a pandas DataFrame", field="df")
    for col in (value, by):
        if col not in df.columns:
            raise UserError(f"column '{col}' not in the table (columns: {', '.join(map(str, df.columns))})",
                            field="df")
    if not (0 < level < 1):
        raise UserError(f"must be in (0, 1), got {level!r}", field="level")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise UserError(f"must be an integer >= 1, got {n_boot!r}", field="n_boot")


def _finite_groups(df, value: str, by: str) -> dict[str, np.ndarray]:
    """The finite values of ``value`` per group of ``by`` (groups sorted), as float arrays."""
    import pandas as pd

    data = df[[by, value]].copy()
    data[value] = pd.to_numeric(data[value], errors="coerce")
    data = data[np.isfinite(data[value].to_numpy(dtype=float))]
    if data.empty:
        raise UserError(f"no finite values in column '{value}'", field="df")
    return {str(k): g[value].to_numpy(dtype=float) for k, g in data.groupby(by, sort=True)}


def _bootstrap_means(groups: dict[str, np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    """n_boot x groups replicates of each group's mean, rows resampled within their group (one rng, group order)."""
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, len(groups)))
    for j, x in enumerate(groups.values()):
        idx = rng.integers(0, len(x), size=(n_boot, len(x)))
        boot[:, j] = x[idx].mean(axis=1)
    return boot


def _cross_entropy_variance(df, by: str) -> dict:
    """Per-group mean cross-entropy and their population variance (``CE_VARIANCE_LABEL``); None without data."""
    import pandas as pd

    out: dict[str, Any] = {"ce_variance": None, "ce_group_means": None}
    if "cross_entropy" not in df.columns:
        return out
    ce = df[[by, "cross_entropy"]].copy()
    ce["cross_entropy"] = pd.to_numeric(ce["cross_entropy"], errors="coerce")
    ce = ce[np.isfinite(ce["cross_entropy"].to_numpy(dtype=float))]
    if not ce.empty:
        ce_means = ce.groupby(by, sort=True)["cross_entropy"].mean()
        out["ce_group_means"] = {str(k): float(v) for k, v in ce_means.items()}
        out["ce_variance"] = float(np.var(ce_means.to_numpy(dtype=float), ddof=0))
    return out


def disparity(df, value: str = "speedup_measured", by: str = "task", *, n_boot: int = 2000, seed: int = 0,
              level: float = 0.95) -> dict:
    """Per-group means of ``value`` with percentile bootstrap intervals and across-group disparity measures.

    Bootstrap: prompts (rows) are resampled with replacement within each group (stratified), ``n_boot``
    times with ``numpy.random.default_rng(seed)``; the same resamples give intervals for the max/min ratio and the
    coefficient of variation (population std / |mean| of the group means). ``ce_variance`` is reprogrid's own
    definition (see ``CE_VARIANCE_LABEL``), computed when the frame has a ``cross_entropy`` column.
    The bootstrap distribution of max/min is biased upward (the max of noisy group means overshoots, the min
    undershoots), so its percentile interval can sit above the point estimate when groups are close; read it as
    an upper-side uncertainty band, not a symmetric interval.
    """
    _check_arguments(df, value, by, n_boot, level)
    groups = _finite_groups(df, value, by)
    names = list(groups)
    boot = _bootstrap_means(groups, n_boot, seed)
    lo_q, hi_q = (1 - level) / 2 * 100, (1 + level) / 2 * 100

    def _ci(arr: np.ndarray) -> list[float]:
        arr = arr[np.isfinite(arr)]
        return [float(np.percentile(arr, lo_q)), float(np.percentile(arr, hi_q))] if arr.size else [math.nan] * 2

    means = np.array([groups[n].mean() for n in names])
    per_group = {name: {"mean": float(means[j]), "n": int(len(x)),
                        "sd": float(np.std(x, ddof=1)) if len(x) > 1 else float("nan"),
                        "ci_low": float(np.percentile(boot[:, j], lo_q)),
                        "ci_high": float(np.percentile(boot[:, j], hi_q))}
                 for j, (name, x) in enumerate(groups.items())}
    ce = _cross_entropy_variance(df, by)
    return {
        "value": value, "by": by, "n_boot": n_boot, "seed": seed, "level": level,
        "groups": per_group,
        "max_group": names[int(np.argmax(means))], "min_group": names[int(np.argmin(means))],
        "max_min_ratio": _ratio(means), "max_min_ratio_ci": _ci(np.array([_ratio(row) for row in boot])),
        "cv": _cv(means), "cv_ci": _ci(np.array([_cv(row) for row in boot])),
        "cv_definition": CV_DEFINITION,
        "ce_variance": ce["ce_variance"], "ce_group_means": ce["ce_group_means"],
        "ce_variance_definition": CE_VARIANCE_LABEL,
    }
