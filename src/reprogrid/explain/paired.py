"""Paired, task-clustered tests of the contributions of an ``explain`` path (and of its gap).

A contribution is a linear contrast of the path's cell means: phi_i = sum_c a_ic mean_c. On items scored in
every cell of the path it is the mean over items of the per-item contrast d_i = sum_c a_ic y_ci (a paired
comparison: item difficulty cancels). For each contrast:

- ``se``: standard error of mean(d) clustered by task (CR1: G/(G-1) * sum_t (sum_{i in t} (d_i - mean d))^2
  / n^2 over G tasks; the plain item standard error without a task column or with one task). Tasks
  are clusters because items of one task are not independent draws (Miller 2024, "Adding Error Bars to Evals").
- ``p_value``: two-sided. Exact McNemar test (``statsmodels``) when the contrast is one cell against
  another and the scores are 0/1; otherwise a paired permutation test (``scipy.stats.permutation_test``,
  signs of d_i flipped at random; every sign pattern when 2^n <= 9,999, else 9,999 random ones).
- ``mde``: the minimum detectable effect at level 0.05 two-sided and 80% power,
  (z_0.975 + z_0.8) * se.
- ``n_pairs``: the items used (those scored in every cell of the path).
Population: the same tasks' items drawn anew for the p-value; new tasks too for ``se`` and ``mde``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

MDE_FACTOR = float(sps.norm.ppf(0.975) + sps.norm.ppf(0.8))
TEST_COLUMNS = ["n_pairs", "se", "p_value", "test", "mde"]


def clustered_se(d: np.ndarray, clusters: np.ndarray | None) -> float:
    """CR1 standard error of mean(d) with ``clusters`` (iid standard error with fewer than two)."""
    n = len(d)
    if n < 2:
        return float("nan")
    if clusters is None or len(np.unique(clusters)) < 2:
        return float(np.std(d, ddof=1) / np.sqrt(n))
    codes, uniq = pd.factorize(pd.Series(clusters))
    G = len(uniq)
    sums = np.bincount(codes, weights=d - d.mean(), minlength=G)
    return float(np.sqrt(G / (G - 1) * np.sum(sums ** 2)) / n)


def mcnemar_p(low: np.ndarray, high: np.ndarray) -> float:
    from statsmodels.stats.contingency_tables import mcnemar

    table = [[np.sum((low == 1) & (high == 1)), np.sum((low == 1) & (high == 0))],
             [np.sum((low == 0) & (high == 1)), np.sum((low == 0) & (high == 0))]]
    return float(mcnemar(table, exact=True).pvalue)


def sign_flip_p(d: np.ndarray, seed: int) -> float:
    if not np.any(d != 0):
        return 1.0
    res = sps.permutation_test((d,), np.mean, permutation_type="samples", vectorized=True, n_resamples=9999,
                               alternative="two-sided", random_state=np.random.default_rng(seed))
    return float(res.pvalue)


def contrast_tests(mat: np.ndarray, A: np.ndarray, tasks: np.ndarray | None, seed: int = 0) -> pd.DataFrame:
    """One row per contrast (row of ``A``, cells x weights) on the cells x items matrix ``mat`` (NaN where
    a cell lacks an item): :data:`TEST_COLUMNS`."""
    complete = ~np.isnan(mat).any(axis=0)
    Y = mat[:, complete]
    cl = tasks[complete] if tasks is not None else None
    binary = bool(Y.size) and bool(np.all((Y == 0) | (Y == 1)))
    rows = []
    for a in np.atleast_2d(A):
        d = a @ Y
        n = int(len(d))
        if n < 2:
            rows.append({"n_pairs": n, "se": np.nan, "p_value": np.nan, "test": "", "mde": np.nan})
            continue
        se = clustered_se(d, cl)
        nz = np.flatnonzero(np.abs(a) > 1e-12)
        if binary and len(nz) == 2 and np.isclose(a[nz[0]], -a[nz[1]]) and np.isclose(abs(a[nz[0]]), 1):
            lo, hi = (nz[0], nz[1]) if a[nz[0]] < 0 else (nz[1], nz[0])
            p, test = mcnemar_p(Y[lo], Y[hi]), "mcnemar_exact"
        else:
            p, test = sign_flip_p(d, seed), "paired_permutation"
        rows.append({"n_pairs": n, "se": se, "p_value": p, "test": test, "mde": MDE_FACTOR * se})
    return pd.DataFrame(rows, columns=TEST_COLUMNS)
