"""The item bootstrap of the Shapley shares: items resampled jointly across cells, within strata."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reprogrid.attribution.prepare import Data, combine_codes
from reprogrid.stats import StratifiedResampler


def unit_strata(data: Data, max_singleton_share: float = 0.1) -> tuple[np.ndarray, list[str], list[str]]:
    """Stratum of each unit: the same set of levels of every factor whose levels do not share all units.

    Items crossed with a factor (seen at all its levels) say nothing; items nested in a factor
    (e.g. a tokenizer or length that changes the documents) or seen at a subset of its levels (a
    split) are resampled only among items with the same pattern. A factor whose patterns would leave
    more than ``max_singleton_share`` of the units alone in their stratum (no variance left to
    resample, e.g. levels assigned at random per row) is not used; it is reported.
    """
    U = data.n_units
    candidates = []
    for j, f in enumerate(data.factors):
        L = int(data.n_levels[j])
        lev = data.cell_codes[data.e_cell, j]
        present = np.zeros((U, L), dtype=bool)
        present[data.e_unit, lev] = True
        if present.all():
            continue  # units crossed with this factor
        if L < 62:
            sig = present.astype(np.int64) @ (np.int64(1) << np.arange(L, dtype=np.int64))
        else:
            sig = pd.factorize(pd.Series([r.tobytes() for r in present]))[0]
        sig = pd.factorize(np.asarray(sig, dtype=np.int64))[0].astype(np.int64)
        candidates.append((int(sig.max()) + 1, j, f, sig))
    parts, used, skipped = [], [], []
    for _, j, f, sig in sorted(candidates, key=lambda c: (c[0], c[1])):
        trial = combine_codes(parts + [sig], U)
        sizes = np.bincount(trial)
        if U > 1 and np.mean(sizes[trial] == 1) > max_singleton_share:
            skipped.append(f)
            continue
        parts.append(sig)
        used.append(f)
    order = {f: i for i, f in enumerate(data.factors)}
    return combine_codes(parts, U), sorted(used, key=order.get), sorted(skipped, key=order.get)



def bootstrap_shares(data: Data, subsets, family: str, bootstrap: int, ci: float, seq: np.random.SeedSequence,
                     items: list[str], shap: np.ndarray):
    """Percentile intervals of the Shapley shares (residual last) over ``bootstrap`` item resamples.

    Returns ``(ci_low, ci_high, info, replicates, sobol_replicates, sums)``; both replicate arrays are
    (bootstrap, k + 1), residual last; ``sums`` = (cell counts, cell sums, total) of every replicate."""
    factors = data.factors
    strata, nested, not_stratified = unit_strata(data)
    rng = np.random.Generator(np.random.PCG64(seq))
    res = StratifiedResampler(strata)
    C = len(data.cell_n)
    bn = np.empty((bootstrap, C))
    bs = np.empty((bootstrap, C))
    bx = np.empty(bootstrap)
    e_x = data.e_q if family == "gaussian" else data.e_h
    for r in range(bootstrap):
        w = res.counts(rng)[data.e_unit]
        bn[r] = np.bincount(data.e_cell, weights=w * data.e_n, minlength=C)
        bs[r] = np.bincount(data.e_cell, weights=w * data.e_s, minlength=C)
        bx[r] = float(np.dot(w, e_x))
    bv = subsets.v(bn, bs, bx, family)
    bshap = np.column_stack([subsets.shapley(bv), 1.0 - bv[:, subsets.full]])
    bsobol = np.column_stack([subsets.sobol_total(bv), 1.0 - bv[:, subsets.full]])
    alpha = (1 - ci) / 2
    ci_low = np.nanquantile(bshap, alpha, axis=0)
    ci_high = np.nanquantile(bshap, 1 - alpha, axis=0)
    bvall = bv[:, subsets.full]
    info = {
        "interval": "percentile",
        "statistic": "shapley (residual row: 1 - v(all factors))",
        "unit": "item" if items else "row",
        "item_columns": items,
        "resampled_jointly_across_cells": True,
        "n_units": data.n_units,
        "n_strata": int(strata.max()) + 1,
        "strata_from_factors": nested,
        "not_stratified_by": not_stratified,
        "v_all_interval": [float(np.nanquantile(bvall, alpha)), float(np.nanquantile(bvall, 1 - alpha))],
        "shapley_se": {f: float(np.nanstd(bshap[:, j], ddof=1)) for j, f in enumerate(factors)},
        "shapley_bias": {f: float(np.nanmean(bshap[:, j]) - shap[j]) for j, f in enumerate(factors)},
    }
    return ci_low, ci_high, info, bshap, bsobol, (bn, bs, bx)


def calibrated(estimate: np.ndarray, replicates: np.ndarray, n_units: int, n_strata: int, ci: float):
    """Bias-corrected estimate of the population value and its normal interval from bootstrap replicates.

    For a share built from v(S), the noise of the cell means adds a positive quadratic term (an R^2
    counts sampling noise as effect); the item bootstrap adds the same term again on top of the
    estimate, so mean(replicates) - estimate estimates it ((U - H) / U of it for U units in H strata,
    the plug-in variance). Estimate: ``estimate - U / (U - H) * (mean(replicates) - estimate)``;
    interval: that estimate -/+ z_{(1+ci)/2} * sd(replicates). Returns (adjusted, low, high, se)."""
    from scipy.stats import norm

    with np.errstate(invalid="ignore"):
        factor = n_units / (n_units - n_strata) if n_units > n_strata else 1.0
        bias = np.nanmean(replicates, axis=0) - estimate
        adj = estimate - factor * bias
        se = np.nanstd(replicates, axis=0, ddof=1)
    z = float(norm.ppf((1 + ci) / 2))
    return adj, adj - z * se, adj + z * se, se
