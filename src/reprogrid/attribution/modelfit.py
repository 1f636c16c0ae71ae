"""The model of an incomplete design: main effects and the two-way interactions the cells run can estimate,
fitted on cell means (gaussian: statsmodels WLS with the cell sizes as weights; binomial: statsmodels GLM,
binomial family, cell sizes as variance weights, Pearson dispersion), and its predictions with intervals.

Terms enter in the order of :func:`reprogrid.designs.greedy_model` (main effects, then two-way interactions
by degrees of freedom); a term keeps the contrast columns not already spanned by the terms before it, so an
aliased effect is carried by the first term of its alias group and named with the group.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats
from scipy.special import expit

from reprogrid.designs import aliases as design_aliases


@dataclass
class CellFit:
    """A fitted main-effects + estimable two-way model over cells given by level codes."""

    family: str
    n_levels: np.ndarray
    names: list[str]
    columns: list  # [(term, kept contrast columns)]
    aliased: dict[str, list[str]]  # term -> the earlier terms whose span holds it
    partial: dict[str, list[str]]  # two-way interactions held in part (not fitted) -> overlapping earlier terms
    beta: np.ndarray
    cov: np.ndarray
    scale: float  # gaussian: residual variance of one row; binomial: Pearson dispersion
    df_resid: int
    scale_source: str

    def X(self, codes: np.ndarray) -> np.ndarray:
        return design_aliases.model_matrix(codes, self.n_levels, self.columns)

    def quantile(self, level: float) -> float:
        q = 0.5 + level / 2
        return float(stats.t.ppf(q, self.df_resid)) if self.family == "gaussian" and self.df_resid > 0 \
            else float(stats.norm.ppf(q))

    def predict(self, codes: np.ndarray, n: np.ndarray | None = None, level: float = 0.95) -> dict[str, np.ndarray]:
        """Cell means with a confidence interval (``low``, ``high``: for the cell's true mean) and, given cell
        sizes ``n``, a prediction interval for a measured cell mean of that size (``obs_low``, ``obs_high``)."""
        X = self.X(codes)
        eta = X @ self.beta
        se_eta = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", X, self.cov, X), 0.0))
        z = self.quantile(level)
        if self.family == "gaussian":
            mean, lo, hi, se = eta, eta - z * se_eta, eta + z * se_eta, se_eta
        else:
            mean, lo, hi = expit(eta), expit(eta - z * se_eta), expit(eta + z * se_eta)
            se = mean * (1 - mean) * se_eta
        out = {"mean": mean, "se": se, "low": lo, "high": hi}
        if n is not None:
            noise = self.scale / n if self.family == "gaussian" else self.scale * mean * (1 - mean) / n
            spread = z * np.sqrt(se ** 2 + noise)
            out["obs_low"], out["obs_high"] = mean - spread, mean + spread
            if self.family == "binomial":
                out["obs_low"], out["obs_high"] = np.clip(out["obs_low"], 0, 1), np.clip(out["obs_high"], 0, 1)
        return out

    def draws(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Coefficient draws from the estimate's approximate sampling distribution: (size, p)."""
        return rng.multivariate_normal(self.beta, self.cov, size=size, method="svd")

    def means(self, X: np.ndarray, beta: np.ndarray) -> np.ndarray:
        eta = np.atleast_2d(beta) @ X.T
        return eta if self.family == "gaussian" else expit(eta)

    def term_slices(self) -> list[tuple[tuple[int, ...], slice]]:
        """Each kept term's coefficient positions (after the intercept)."""
        out, at = [], 1
        for t, kept in self.columns:
            out.append((t, slice(at, at + len(kept))))
            at += len(kept)
        return out


def fit_cells(codes: np.ndarray, n_levels: Sequence[int], names: Sequence[str], n: np.ndarray, mean: np.ndarray,
              family: str, within_var: float) -> CellFit:
    """Fit the estimable main-effects + two-way model to cell means ``mean`` of sizes ``n``.

    ``within_var``: the pooled within-cell variance of one row (gaussian), used for the scale when the model
    leaves no residual degree of freedom."""
    import statsmodels.api as sm

    g = design_aliases.greedy_model(codes, n_levels, list(names))
    X = design_aliases.model_matrix(codes, n_levels, g["columns"])
    df_resid = len(codes) - X.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if family == "gaussian":
            res = sm.WLS(mean, X, weights=n).fit()
            if df_resid > 0:
                scale, source = float(res.scale), "residual variance of the cell means around the model"
            else:
                scale, source = float(within_var), "pooled within-cell variance (the model is saturated)"
            cov = np.asarray(res.normalized_cov_params) * scale
        else:
            res = sm.GLM(np.clip(mean, 0, 1), X, family=sm.families.Binomial(), var_weights=n).fit()
            pearson = float(np.sum(res.resid_pearson ** 2))
            scale = max(pearson / df_resid, 1.0) if df_resid > 0 else 1.0
            source = "Pearson dispersion (at least 1)" if df_resid > 0 else "1 (the model is saturated)"
            cov = np.asarray(res.cov_params()) * scale
    return CellFit(family, np.asarray(n_levels), list(names), g["columns"], g["aliased"], g["partial"],
                   np.asarray(res.params),
                   cov, scale, max(df_resid, 0), source)


def estimable_rows(run_codes: np.ndarray, codes: np.ndarray, n_levels: Sequence[int]) -> np.ndarray:
    """Whether each row's mean is estimable under the full main-effects + all two-way model from the run rows:
    a prediction that does not depend on how aliased effects are assigned."""
    k = run_codes.shape[1]
    terms = design_aliases.terms_of(k)

    def full(c):
        return np.hstack([np.ones((len(c), 1))] + [design_aliases.term_matrix(c, n_levels, t) for t in terms])

    A, B = full(run_codes), full(codes)
    _, s, vt = np.linalg.svd(A, full_matrices=False)
    V = vt[s > s[0] * 1e-10 * max(A.shape)]
    resid = B - (B @ V.T) @ V
    return np.linalg.norm(resid, axis=1) <= 1e-8 * np.maximum(np.linalg.norm(B, axis=1), 1.0)
