"""Attribution of an incomplete design (a fraction of the grid was run): a model-based decomposition.

The model (:mod:`reprogrid.attribution.modelfit`): main effects and the two-way interactions the cells run can
estimate, fitted on cell means. It predicts every cell of the full grid (the cross product of the factors'
levels); the shares are those :func:`reprogrid.attribution.attribute` would report on that full grid with
the predicted means as cell means, the cell size of the runs and the measured within-cell spread:

- ``eta2``, ``omega2``: type-II sums of squares (binomial: deviance drops) of the fitted terms on the cells
  run, over the total; one row per factor and per estimable two-way interaction. An aliased effect is named
  with the effects it is aliased with (``a:b = c:d``), never split; its share is carried by the first
  (main effects first, then two-way interactions by degrees of freedom, in factor order).
- ``shapley``, ``sobol_total``: as in ``attribute``, on the predicted full grid (plug-in).
- ``ci_low``, ``ci_high``: percentile interval of ``shapley`` over draws of the coefficients from their
  estimated sampling distribution (a parametric bootstrap).
- ``shapley_adj``, ``sobol_total_adj``: the same, bias-corrected: noise in the fitted coefficients adds
  spread to the predicted grid, so every v(S) is reduced by its mean increase over the draws (the bootstrap
  bias correction, 2 v - mean(v*)); an estimate of the population share, as ``attribute``'s ``shapley_adj``.
  ``adj_ci_low``, ``adj_ci_high``: the percentile interval shifted by the same correction. All need draws.
- ``noise_floor``: the 95th percentile of the (bias-corrected, with draws) share the factor gets when every
  coefficient of a term that involves it is drawn around zero with the estimated covariance: what a factor
  with no effect gets here; compare ``shapley_adj`` with it.

``predicted``: one row per cell of the full grid: measured mean and size where run, predicted mean with a
confidence interval for the cell's true mean, ``status`` (measured / predicted) and ``estimable`` (whether
the prediction holds under the full main-effects + two-way model, whatever the aliased effects are).
``holdout``: the leave-cells-out check (:mod:`reprogrid.attribution.holdout`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from reprogrid.attribution.anova import Anova
from reprogrid.attribution.core import _check_options, _single_threaded_blas
from reprogrid.attribution.holdout import holdout
from reprogrid.attribution.modelfit import CellFit, estimable_rows, fit_cells
from reprogrid.attribution.noise import NOISE_QUANTILE
from reprogrid.attribution.prepare import COLUMNS, RESIDUAL, Data, as_list, prepare
from reprogrid.attribution.subsets import Subsets
from reprogrid.designs.aliases import chains, term_name, terms_of
from reprogrid.errors import UserError
from reprogrid.io import to_jsonable

CSV_NAME = "design_shares.csv"
JSON_NAME = "design_shares.json"
PREDICTED_NAME = "predicted_cells.csv"
HOLDOUT_NAME = "holdout.csv"
MAX_GRID_CELLS = 200_000


@dataclass
class EstimateResult:
    table: pd.DataFrame  # COLUMNS, as attribute's
    predicted: pd.DataFrame
    holdout: pd.DataFrame
    details: dict[str, Any] = field(default_factory=dict)

    def to_json_obj(self) -> dict[str, Any]:
        rows = [{k: to_jsonable(v) for k, v in rec.items()} for rec in self.table.to_dict(orient="records")]
        return {"effects": rows, **to_jsonable(self.details)}


def estimate(df: pd.DataFrame, response: str, factors: Sequence[str], family: str = "gaussian", draws: int = 200,
             seed: int = 0, ci: float = 0.95, noise_draws: int = 100, folds: int = 10) -> EstimateResult:
    """Model-based shares, predicted cells and the held-out check of an incomplete grid (see the module)."""
    draws, noise_draws, seed, ci = _check_options(draws, noise_draws, seed, ci)
    with _single_threaded_blas():
        return _estimate(df, response, list(as_list(factors)), family, draws, seed, ci, noise_draws, folds)


def _cell_stats(data: Data, family: str) -> tuple[np.ndarray, float, float]:
    mean = data.cell_s / data.cell_n + data.y_mean
    N, C = float(data.cell_n.sum()), len(data.cell_n)
    if family == "gaussian":
        within = float(data.cell_q.sum() - np.sum(data.cell_s ** 2 / data.cell_n))
        within_var = within / (N - C) if N > C else 0.0
        extra_per_row = within_var
    else:
        within_var = 0.0
        extra_per_row = float(data.cell_h.sum() / N)
    return mean, max(within_var, 0.0), extra_per_row


def _estimate(df, response, factors, family, draws, seed, ci, noise_draws, folds) -> EstimateResult:
    data = prepare(df, response, factors, [], family)
    factors, k = data.factors, len(data.factors)
    mean, within_var, extra_row = _cell_stats(data, family)
    fit = fit_cells(data.cell_codes, data.n_levels, factors, data.cell_n, mean, family, within_var)
    n_full = int(np.prod(data.n_levels))
    if n_full > MAX_GRID_CELLS:
        raise UserError(f"the full grid of these factors has {n_full:,} cells, more than {MAX_GRID_CELLS:,}",
                        field="--factors")
    full = np.array(list(itertools.product(*(range(int(L)) for L in data.n_levels))), dtype=np.int64)
    X_full = fit.X(full)
    n_bar = float(data.cell_n.mean())
    subsets = Subsets(full)
    shares = _Shares(subsets, family, n_bar, extra_row, len(full))
    boot_seq, null_seq = np.random.SeedSequence(seed).spawn(2)
    per, v = _share_columns(fit, X_full, shares, subsets, draws, ci, np.random.default_rng(boot_seq))
    per["noise_floor"] = np.append(_noise(fit, X_full, shares, subsets, noise_draws,
                                          np.random.default_rng(null_seq)), np.nan)
    anova = _type2(data, family, fit)
    table = _table(fit, anova, per)
    predicted = _predicted(data, fit, full, mean, ci)
    ho, ho_summary = holdout(data.cell_codes, data.n_levels, factors, data.cell_n, mean, family, within_var,
                             folds, seed, ci)
    ho = _with_levels(ho, data, ho["cell"].to_numpy(), data.cell_codes)
    details = _details(data, fit, family, response, anova, draws, noise_draws, ci, seed, n_full, ho_summary)
    details["first_order"] = dict(zip(factors, [float(v[0, 1 << j]) for j in range(k)]))
    unrun = predicted[predicted["status"] == "predicted"]
    details["predicted"] = {"cells": int(len(unrun)), "estimable": int(unrun["estimable"].sum())}
    return EstimateResult(table, predicted, ho.drop(columns=["cell"]), details)


def _share_columns(fit: CellFit, X_full, shares, subsets: Subsets, draws: int, ci: float, rng):
    """Per factor (and, last, the residual): the share columns of the table; and v(S) of the fitted grid."""
    v = shares.v(fit.means(X_full, fit.beta))
    k1 = subsets.k + 1

    def cols(vv):
        return np.column_stack([subsets.shapley(vv), 1.0 - vv[:, subsets.full]]), \
            np.column_stack([subsets.sobol_total(vv), 1.0 - vv[:, subsets.full]])

    shap, st = cols(v)
    nan = np.full(k1, np.nan)
    per = {"shapley": shap[0], "sobol_total": st[0], "ci_low": nan, "ci_high": nan, "shapley_adj": nan,
           "adj_ci_low": nan, "adj_ci_high": nan, "sobol_total_adj": nan}
    if draws > 0:  # coefficient noise adds spread to the predicted grid: the draws measure it and take it out
        vb = shares.v(fit.means(X_full, fit.draws(rng, draws)))
        bias = np.nanmean(vb, axis=0, keepdims=True) - v
        shares.bias = bias
        q = ((1 - ci) / 2, (1 + ci) / 2)
        sb = cols(vb)[0]
        sb_adj = cols(vb - 2 * bias)[0]
        shap_adj, st_adj = cols(v - bias)
        per.update(ci_low=np.nanquantile(sb, q[0], axis=0), ci_high=np.nanquantile(sb, q[1], axis=0),
                   shapley_adj=shap_adj[0], sobol_total_adj=st_adj[0],
                   adj_ci_low=np.nanquantile(sb_adj, q[0], axis=0), adj_ci_high=np.nanquantile(sb_adj, q[1], axis=0))
        v = v - bias
    return per, v


class _Shares:
    """v(S) of the full grid with given cell means: (R, C) means -> (R, 2^k)."""

    def __init__(self, subsets: Subsets, family: str, n_bar: float, extra_row: float, n_cells: int):
        self.subsets, self.family, self.n_bar = subsets, family, n_bar
        self.extra_row, self.n_cells = extra_row, n_cells
        self.bias = 0.0  # the mean extra v(S) that coefficient noise adds (set once known)

    def v(self, means: np.ndarray) -> np.ndarray:
        m = np.atleast_2d(means)
        n = np.full(m.shape, self.n_bar)
        if self.family == "gaussian":
            m = m - m.mean(axis=1, keepdims=True)
            extra = (self.n_bar * m * m).sum(axis=1) + self.n_cells * (self.n_bar - 1) * self.extra_row
            return self.subsets.v(n, self.n_bar * m, extra, "gaussian")
        m = np.clip(m, 0.0, 1.0)
        extra = np.full(len(m), self.n_cells * self.n_bar * self.extra_row)
        return self.subsets.v(n, self.n_bar * m, extra, "binomial")


def _noise(fit: CellFit, X_full, shares: _Shares, subsets: Subsets, draws: int, rng) -> np.ndarray:
    k = len(fit.names)
    out = np.full(k, np.nan)
    if draws <= 0:
        return out
    slices = fit.term_slices()
    for j in range(k):
        idx = np.concatenate([np.arange(s.start, s.stop) for t, s in slices if j in t] or [np.zeros(0, int)])
        if not len(idx):
            continue
        beta = np.tile(fit.beta, (draws, 1))
        beta[:, idx] = rng.multivariate_normal(np.zeros(len(idx)), fit.cov[np.ix_(idx, idx)], size=draws,
                                               method="svd")
        sh = subsets.shapley(shares.v(fit.means(X_full, beta)) - shares.bias)[:, j]
        out[j] = float(np.nanquantile(sh, NOISE_QUANTILE))
    return out


def _type2(data: Data, family: str, fit: CellFit) -> dict[str, Any]:
    """Type-II sums of squares (deviance drops) of the fitted terms on the cells run."""
    an = Anova(data, family)
    index = {t: i for i, t in enumerate(an.terms)}
    kept = frozenset(index[t] for t, _ in fit.columns)
    base = an.table()
    within = base["residual_ss"] - an.fit(frozenset(range(len(an.terms))))[0]
    crit, rank, _ = an.fit(kept)
    resid_ss, resid_df = max(within + crit, 0.0), int(round(data.cell_n.sum())) - rank
    effects = {}
    for t, _ in fit.columns:
        i = index[t]
        without = frozenset(u for u in kept if t[0] not in an.terms[u]) if len(t) == 1 else kept - {i}
        with_ = without | {i}
        c0, r0, _ = an.fit(without)
        c1, r1, _ = an.fit(with_)
        effects[t] = (max(c0 - c1, 0.0) if r1 > r0 else float("nan"), r1 - r0)
    ms_e = resid_ss / resid_df if family == "gaussian" and resid_df > 0 else fit.scale
    return {"effects": effects, "total": base["total_ss"], "residual": resid_ss, "residual_df": resid_df,
            "ms_error": ms_e}


SHARE_COLUMNS = ("shapley", "sobol_total", "ci_low", "ci_high", "noise_floor", "shapley_adj", "adj_ci_low",
                 "adj_ci_high", "sobol_total_adj")


def _table(fit: CellFit, anova, per: dict) -> pd.DataFrame:
    names = fit.names
    groups = {g[0]: g for g in chains(fit.aliased)}
    total, ms_e = anova["total"], anova["ms_error"]
    rows = []
    for t, _ in sorted(fit.columns, key=lambda c: (len(c[0]), c[0])):
        name = term_name(t, names)
        label = " = ".join(groups[name]) if name in groups else name
        ss, df_t = anova["effects"][t]
        eta2 = ss / total if np.isfinite(ss) else np.nan
        omega2 = (ss - df_t * ms_e) / (total + ms_e) if np.isfinite(ss) and np.isfinite(ms_e) else np.nan
        j = t[0] if len(t) == 1 else None
        rows.append({"effect": label, "eta2": eta2, "omega2": omega2,
                     **{c: per[c][j] if j is not None else np.nan for c in SHARE_COLUMNS}})
    for j, f in enumerate(names):  # a factor whose main effect the runs cannot estimate still gets its shares
        if not any(t == (j,) for t, _ in fit.columns):
            rows.append({"effect": f, "eta2": np.nan, "omega2": np.nan, **{c: per[c][j] for c in SHARE_COLUMNS}})
    rows.append({"effect": RESIDUAL, "eta2": anova["residual"] / total, "omega2": np.nan,
                 **{c: per[c][-1] for c in SHARE_COLUMNS}})
    table = pd.DataFrame(rows, columns=COLUMNS)
    for c in COLUMNS[1:]:
        table[c] = table[c].astype(np.float64)
    return table


def _with_levels(df: pd.DataFrame, data: Data, rows: np.ndarray, codes: np.ndarray) -> pd.DataFrame:
    lv = {f: [data.levels[j][c] for c in codes[rows, j]] for j, f in enumerate(data.factors)}
    return pd.concat([pd.DataFrame(lv, index=df.index), df], axis=1)


def _predicted(data: Data, fit: CellFit, full: np.ndarray, mean: np.ndarray, ci: float) -> pd.DataFrame:
    widths = np.cumprod([1, *data.n_levels[::-1][:-1]])[::-1]
    run_index = data.cell_codes @ widths
    n = np.zeros(len(full))
    measured = np.full(len(full), np.nan)
    n[run_index], measured[run_index] = data.cell_n, mean
    p = fit.predict(full, level=ci)
    out = pd.DataFrame({"n": n, "measured": measured, "predicted": p["mean"], "ci_low": p["low"],
                        "ci_high": p["high"], "status": np.where(n > 0, "measured", "predicted"),
                        "estimable": estimable_rows(data.cell_codes, full, data.n_levels)})
    return _with_levels(out, data, np.arange(len(full)), full)


def _details(data, fit: CellFit, family, response, anova, draws, noise_draws, ci, seed, n_full, ho) -> dict:
    terms = [term_name(t, fit.names) for t in terms_of(len(fit.names))]
    fitted = {term_name(t, fit.names) for t, _ in fit.columns}
    return {
        "method": {
            "model": ("main effects and the two-way interactions the cells run can estimate, fitted on cell means: "
                      + ("statsmodels WLS, weights = cell sizes" if family == "gaussian" else
                         "statsmodels GLM, binomial family, variance weights = cell sizes, Pearson dispersion")),
            "shapley": "Shapley value of each factor under v(S) on the predicted full grid (as attribute); "
                       "shapley_adj: v(S) bias-corrected by the coefficient draws (2 v - mean v*)",
            "eta2": "type-II SS of the fitted terms on the cells run / total SS",
            "interval": f"percentile interval over {draws} draws of the coefficients (parametric bootstrap)",
            "noise_floor": f"{NOISE_QUANTILE:.0%} quantile of the share with the factor's coefficients drawn "
                           f"around zero ({noise_draws} draws)",
            "aliased": "an aliased effect is named with the effects it is aliased with and carried by the first",
        },
        "family": family, "response": response, "factors": list(data.factors),
        "levels": {f: [to_jsonable(x) for x in lv] for f, lv in zip(data.factors, data.levels)},
        "n_rows": data.n_rows, "n_cells": len(data.cell_n), "n_cells_full_grid": n_full,
        "missing_cells": n_full - len(data.cell_n), "ci": ci, "seed": seed,
        "model_terms": sorted(fitted, key=terms.index),
        "aliased": [" = ".join(c) for c in chains(fit.aliased)],
        "not_estimable": {n: p for n, p in fit.aliased.items() if len(p) != 1},
        "partly_estimable_not_fitted": dict(fit.partial),
        "scale": {"value": fit.scale, "source": fit.scale_source, "df_resid": fit.df_resid},
        "anova": {"total": anova["total"], "residual": anova["residual"], "residual_df": anova["residual_df"],
                  "ms_error": anova["ms_error"]},
        "holdout": ho,
    }
