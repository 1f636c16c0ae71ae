"""Type-II ANOVA (main effects + two-way interactions) on cell sufficient statistics."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from scipy import linalg
from scipy.special import expit, xlogy

from reprogrid.attribution.prepare import Data


def _independent_columns(X: np.ndarray) -> np.ndarray:
    if X.shape[1] == 0:
        return np.zeros(0, dtype=np.int64)
    _, R, piv = linalg.qr(X, mode="economic", pivoting=True)
    d = np.abs(np.diag(R))
    tol = d[0] * max(X.shape) * np.finfo(float).eps * 100 if d.size else 0.0
    rank = int((d > tol).sum())
    return np.sort(piv[:rank])


class Anova:
    def __init__(self, data: Data, family: str):
        self.data, self.family = data, family
        k = len(data.factors)
        blocks = []
        mains = []
        for j in range(k):
            L = int(data.n_levels[j])
            codes = data.cell_codes[:, j]
            X = np.zeros((len(codes), L - 1))
            for lv in range(L - 1):
                X[:, lv] = (codes == lv).astype(float) - (codes == L - 1).astype(float)
            mains.append(X)
        self.terms: list[tuple[int, ...]] = [(j,) for j in range(k)] + list(itertools.combinations(range(k), 2))
        for t in self.terms:
            if len(t) == 1:
                blocks.append(mains[t[0]])
            else:
                a, b = mains[t[0]], mains[t[1]]
                blocks.append((a[:, :, None] * b[:, None, :]).reshape(len(a), -1))
        self.blocks = blocks
        self.intercept = np.ones((data.cell_codes.shape[0], 1))
        self._cache: dict[frozenset, tuple[float, int, np.ndarray]] = {}
        self.n = data.cell_n
        self.mean = data.cell_s / data.cell_n

    def fit(self, terms: frozenset) -> tuple[float, int, np.ndarray]:
        """Cell-level part of the row-level RSS (gaussian) or deviance (binomial), rank, fitted cell means."""
        if terms in self._cache:
            return self._cache[terms]
        X = np.hstack([self.intercept] + [self.blocks[i] for i in sorted(terms)])
        X = X[:, _independent_columns(X)]
        rank = X.shape[1]
        if self.family == "gaussian":
            sw = np.sqrt(self.n)
            beta, *_ = np.linalg.lstsq(X * sw[:, None], self.mean * sw, rcond=None)
            fitted = X @ beta
            crit = float(np.sum(self.n * (self.mean - fitted) ** 2))
        else:
            fitted, crit = _irls_binomial(X, self.n, self.mean)
        out = (max(crit, 0.0), rank, fitted)
        self._cache[terms] = out
        return out

    def table(self) -> dict[str, Any]:
        d = self.data
        n_tot = float(d.cell_n.sum())
        all_terms = frozenset(range(len(self.terms)))
        full_crit, full_rank, full_fit = self.fit(all_terms)
        if self.family == "gaussian":
            within = float(d.cell_q.sum() - np.sum(d.cell_s ** 2 / d.cell_n))
            total = float(d.cell_q.sum() - d.cell_s.sum() ** 2 / n_tot)
        else:
            p = d.cell_s / d.cell_n
            ll_cells = xlogy(d.cell_s, p) + xlogy(d.cell_n - d.cell_s, 1 - p)
            within = float(2 * (d.cell_h.sum() - ll_cells.sum()))
            s_tot = d.cell_s.sum()
            pbar = s_tot / n_tot
            total = float(2 * (d.cell_h.sum() - (xlogy(s_tot, pbar) + xlogy(n_tot - s_tot, 1 - pbar))))
        resid_ss = max(within + full_crit, 0.0)
        resid_df = int(round(n_tot)) - full_rank
        if self.family == "gaussian":
            scale = resid_ss / resid_df if resid_df > 0 else float("nan")
        else:  # Pearson dispersion of the ANOVA model at row level
            mu = np.clip(full_fit, 1e-12, 1 - 1e-12)
            pearson = float(np.sum((d.cell_q - 2 * mu * d.cell_s + mu * mu * d.cell_n) / (mu * (1 - mu))))
            scale = pearson / resid_df if resid_df > 0 else float("nan")
        effects = []
        for i, t in enumerate(self.terms):
            if len(t) == 1:  # all terms not containing j, with and without j
                without = frozenset(u for u, tt in enumerate(self.terms) if t[0] not in tt)
                with_ = without | {i}
            else:
                with_ = all_terms
                without = all_terms - {i}
            c0, r0, _ = self.fit(without)
            c1, r1, _ = self.fit(with_)
            df_t = r1 - r0
            ss = max(c0 - c1, 0.0) if df_t > 0 else float("nan")
            effects.append({"effect": ":".join(d.factors[j] for j in t), "ss": ss, "df": df_t})
        return {"effects": effects, "residual_ss": resid_ss, "residual_df": resid_df, "total_ss": total,
                "total_df": int(round(n_tot)) - 1, "scale": scale}


def _irls_binomial(X: np.ndarray, n: np.ndarray, p: np.ndarray, max_iter: int = 200) -> tuple[np.ndarray, float]:
    """Grouped logistic regression by IRLS; returns fitted probabilities and the cell-level deviance."""
    mu = (n * p + 0.5) / (n + 1.0)
    eta = np.log(mu / (1 - mu))

    def deviance(mu):
        return float(2 * np.sum(n * (xlogy(p, p) - xlogy(p, mu) + xlogy(1 - p, 1 - p) - xlogy(1 - p, 1 - mu))))

    dev = deviance(mu)
    for _ in range(max_iter):
        var = mu * (1 - mu)
        w = n * var
        z = eta + (p - mu) / var
        sw = np.sqrt(w)
        beta, *_ = np.linalg.lstsq(X * sw[:, None], z * sw, rcond=None)
        eta = np.clip(X @ beta, -35.0, 35.0)
        mu = expit(eta)
        new = deviance(mu)
        if abs(dev - new) <= 1e-11 * (abs(new) + 1e-3):
            dev = new
            break
        dev = new
    return mu, dev

