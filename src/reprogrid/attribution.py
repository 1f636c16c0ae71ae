"""Variance attribution: how much of the spread of a response each factor (and interaction) explains.

``reprogrid attribute INPUT --response COL --factors A,B,... [--item COL] [--family gaussian|binomial]
[--bootstrap N] [--seed S] --out DIR`` writes ``DIR/variance_shares.csv`` and ``DIR/variance_shares.json``.

One row per effect (each factor, each two-way interaction ``A:B``, and ``residual``) with

- ``eta2``: type-II ANOVA sum of squares over the total sum of squares. The ANOVA has all main effects
  and all two-way interactions; higher-order interactions are pooled into the residual. With
  ``family="binomial"`` the sums of squares are likelihood-ratio (deviance) drops and the total is the
  null deviance.
- ``omega2``: (SS_j - df_j * MS_E) / (SS_T + MS_E), the small-sample-corrected eta2 (binomial: MS_E is the
  Pearson dispersion of the ANOVA model). Not defined for the residual row (empty).
- ``shapley`` (factor rows): the Shapley value of factor j for v(S) = R^2 of the response on the full
  interaction of the factors in S (binomial: deviance R^2, which is McFadden's R^2 for 0/1 outcomes).
  It sums over the factors to v(all factors); the residual row holds 1 - v(all factors), so the column
  sums to 1. On a balanced grid it equals Owen's Shapley effect.
- ``sobol_total`` (factor rows): v(all) - v(all but j), the share in any effect involving j
  (residual row: 1 - v(all)).
- ``ci_low``, ``ci_high``: a percentile bootstrap interval for ``shapley``. Items (the ``--item``
  column; every row is its own item without it) are resampled jointly across all cells, within strata
  of items that are exchangeable (same set of levels of every factor whose levels do not share items).
- ``noise_floor`` (factor rows): the 95th percentile of the Shapley share the factor gets when its
  labels are permuted (within items where items are crossed with it, between items otherwise, always
  within the cells of the other factors): what a factor with no effect gets at this sample size.

Everything is computed from cell-level sufficient statistics (per cell, and per (cell, item) for the
bootstrap and the permutations): no replicate refits anything from the raw rows.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import linalg, sparse
from scipy.special import expit, xlogy

from reprogrid.errors import UserError
from reprogrid.io import atomic_path, to_jsonable
from reprogrid.stats import StratifiedResampler

__all__ = [
    "AttributionResult",
    "attribute",
    "varying_factors",
    "COLUMNS",
    "FAMILIES",
]

FAMILIES = ("gaussian", "binomial")
COLUMNS = ["effect", "eta2", "omega2", "shapley", "sobol_total", "ci_low", "ci_high", "noise_floor"]
RESIDUAL = "residual"
CSV_NAME = "variance_shares.csv"
JSON_NAME = "variance_shares.json"
MAX_FACTORS = 14
NOISE_QUANTILE = 0.95
DEFAULT_NOISE_PERMUTATIONS = 100


# --------------------------------------------------------------------------------------------------
# Public helpers
# --------------------------------------------------------------------------------------------------


def varying_factors(df: pd.DataFrame, factors: Iterable[str]) -> list[str]:
    """The factors (in the given order) that take more than one value in ``df`` (missing values ignored)."""
    out = []
    for f in factors:
        if f not in df.columns:
            raise UserError(f"no such column in the table (columns: {_fmt_cols(df.columns)})", field=f)
        if df[f].nunique(dropna=True) > 1:
            out.append(f)
    return out


# --------------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------------


@dataclass
class AttributionResult:
    """``table``: one row per effect with :data:`COLUMNS`; ``details``: method and settings (JSON)."""

    table: pd.DataFrame
    details: dict[str, Any] = field(default_factory=dict)
    replicates: pd.DataFrame | None = None  # bootstrap replicates of shapley (columns: factors, residual)

    def to_json_obj(self) -> dict[str, Any]:
        rows = [{k: to_jsonable(v) for k, v in rec.items()} for rec in self.table.to_dict(orient="records")]
        return {"effects": rows, **to_jsonable(self.details)}

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``variance_shares.csv`` and ``variance_shares.json`` into ``out_dir``, atomically."""
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise UserError(f"{out} exists and is not a directory", field="--out")
        csv_path, json_path = out / CSV_NAME, out / JSON_NAME
        csv_text = self.table.to_csv(index=False, float_format="%.10g", lineterminator="\n")
        json_text = json.dumps(self.to_json_obj(), indent=2, sort_keys=True, allow_nan=False) + "\n"
        try:
            with atomic_path(csv_path) as tmp_csv, atomic_path(json_path) as tmp_json:
                tmp_csv.write_text(csv_text, encoding="utf-8")
                tmp_json.write_text(json_text, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write to {out}: {exc.strerror or exc}", field="--out") from None
        return {"csv": csv_path, "json": json_path}


# --------------------------------------------------------------------------------------------------
# Input preparation: cells, units (items), entries = (cell, item) sufficient statistics
# --------------------------------------------------------------------------------------------------


@dataclass
class _Data:
    factors: list[str]
    levels: list[list[Any]]
    n_levels: np.ndarray  # (k,)
    cell_codes: np.ndarray  # (C, k) level code of each factor in each present cell
    cell_n: np.ndarray  # (C,) rows per cell
    cell_s: np.ndarray  # (C,) sum of (centred, for gaussian) response
    cell_q: np.ndarray  # (C,) sum of squares of the same
    cell_h: np.ndarray  # (C,) sum of y log y + (1-y) log(1-y)  (binomial; 0 for 0/1 outcomes)
    e_cell: np.ndarray  # (E,) entry -> cell
    e_unit: np.ndarray  # (E,) entry -> resampling unit (item, or row)
    e_n: np.ndarray
    e_s: np.ndarray
    e_q: np.ndarray
    e_h: np.ndarray
    n_units: int
    n_rows: int
    y_mean: float


def _fmt_cols(cols: Iterable[Any], limit: int = 12) -> str:
    cols = [str(c) for c in cols]
    more = f", ... ({len(cols)} in all)" if len(cols) > limit else ""
    return ", ".join(cols[:limit]) + more


def _check_columns(available: Sequence[str], wanted: Sequence[str], where: Any) -> None:
    missing = [c for c in wanted if c not in available]
    if missing:
        raise UserError(
            f"column {missing[0]!r} not found in {where} (columns: {_fmt_cols(available)})",
            field=missing[0],
        )


def _as_list(x: str | Sequence[str] | None) -> list[str]:
    if x is None:
        return []
    if isinstance(x, str):
        return [x]
    return list(x)


def _factorize(col: pd.Series, name: str) -> tuple[np.ndarray, list[Any]]:
    if col.isna().any():
        raise UserError(f"factor column has {int(col.isna().sum())} missing values; expected a level in every row",
                        field=name)
    try:
        codes, uniques = pd.factorize(col, sort=True)
    except TypeError:  # mixed types that do not sort
        codes, uniques = pd.factorize(col.astype(str), sort=True)
    return codes.astype(np.int64), list(uniques)


def _combine_codes(code_arrays: list[np.ndarray], n_rows: int) -> np.ndarray:
    """Dense ids 0..G-1 for the combinations of several code arrays (no overflow for any number)."""
    if not code_arrays:
        return np.zeros(n_rows, dtype=np.int64)
    combined = pd.factorize(code_arrays[0])[0].astype(np.int64)
    for codes in code_arrays[1:]:
        width = int(codes.max()) + 1 if len(codes) else 1
        combined, _ = pd.factorize(combined * width + codes)
        combined = combined.astype(np.int64)
    return combined


def _prepare(df: pd.DataFrame, response: str, factors: list[str], items: list[str], family: str) -> _Data:
    if not isinstance(df, pd.DataFrame):
        raise UserError("expected a pandas DataFrame", field="df")
    if family not in FAMILIES:
        raise UserError(f"unknown family {family!r}; expected one of: {', '.join(FAMILIES)}", field="family")
    if not factors:
        raise UserError("expected at least one factor column", field="factors")
    if len(set(factors)) != len(factors):
        dup = next(f for f in factors if factors.count(f) > 1)
        raise UserError(f"factor {dup!r} is listed twice", field="factors")
    if len(factors) > MAX_FACTORS:
        raise UserError(f"{len(factors)} factors; at most {MAX_FACTORS} are supported (2^k subsets)",
                        field="factors")
    for f in factors:
        if f == RESIDUAL or ":" in str(f):
            raise UserError(f"factor name {f!r} is reserved or contains ':'", field="factors")
    if response in factors:
        raise UserError(f"column {response!r} is both the response and a factor", field="response")
    if len(set(items)) != len(items):
        raise UserError("an item column is listed twice", field="item")
    if response in items:
        raise UserError(f"column {response!r} is both the response and an item column", field="item")
    _check_columns(list(df.columns), [response, *factors, *items], "the table")
    n_rows = len(df)
    if n_rows < 2:
        raise UserError(f"the table has {n_rows} rows; expected at least 2", field="INPUT")

    ycol = df[response]
    if not (pd.api.types.is_numeric_dtype(ycol) or pd.api.types.is_bool_dtype(ycol)):
        raise UserError(f"response must be numeric; column has dtype {ycol.dtype}", field=response)
    try:
        y = ycol.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise UserError(f"response must be numeric; column has dtype {ycol.dtype}", field=response) from None
    bad = ~np.isfinite(y)
    if bad.any():
        raise UserError(f"response has {int(bad.sum())} missing or infinite values; expected a number in every row",
                        field=response)
    if family == "binomial" and ((y < 0).any() or (y > 1).any()):
        raise UserError("binomial response must be 0/1 or a fraction in [0, 1]", field=response)

    codes_list, levels = [], []
    for f in factors:
        codes, uniq = _factorize(df[f], f)
        if len(uniq) < 2:
            raise UserError(f"factor has one level ({uniq[0]!r}); a factor needs at least two "
                            "(drop constant factors, see varying_factors)", field=f)
        codes_list.append(codes)
        levels.append(uniq)
    n_levels = np.array([len(lv) for lv in levels], dtype=np.int64)

    if family == "gaussian":
        if np.ptp(y) == 0:
            raise UserError("response is constant; there is no variance to attribute", field=response)
        y_mean = float(y.mean())
        yv = y - y_mean
        hv = np.zeros_like(yv)
    else:
        if np.ptp(y) == 0:
            raise UserError("binomial response is constant; there is no deviance to attribute", field=response)
        y_mean = 0.0
        yv = y
        hv = xlogy(y, y) + xlogy(1.0 - y, 1.0 - y)

    cell_row = _combine_codes(codes_list, n_rows)
    n_cells = int(cell_row.max()) + 1
    first = np.full(n_cells, n_rows, dtype=np.int64)
    np.minimum.at(first, cell_row, np.arange(n_rows, dtype=np.int64))
    cell_codes = np.stack([c[first] for c in codes_list], axis=1)
    # order cells lexicographically by level codes (stable, readable)
    order = np.lexsort(cell_codes.T[::-1])
    remap = np.empty(n_cells, dtype=np.int64)
    remap[order] = np.arange(n_cells)
    cell_codes = cell_codes[order]
    cell_row = remap[cell_row]

    if items:
        item_codes = []
        for it in items:
            col = df[it]
            if col.isna().any():
                raise UserError(f"item column has {int(col.isna().sum())} missing values", field=it)
            item_codes.append(pd.factorize(col)[0].astype(np.int64))
        unit_row = _combine_codes(item_codes, n_rows)
        n_units = int(unit_row.max()) + 1
        key = cell_row * n_units + unit_row
        ent, e_idx = np.unique(key, return_inverse=True)
        e_cell, e_unit = ent // n_units, ent % n_units
        m = len(ent)
        e_n = np.bincount(e_idx, minlength=m).astype(np.float64)
        e_s = np.bincount(e_idx, weights=yv, minlength=m)
        e_q = np.bincount(e_idx, weights=yv * yv, minlength=m)
        e_h = np.bincount(e_idx, weights=hv, minlength=m)
    else:  # every row is its own unit
        n_units = n_rows
        e_cell, e_unit = cell_row, np.arange(n_rows, dtype=np.int64)
        e_n, e_s, e_q, e_h = np.ones(n_rows), yv, yv * yv, hv

    cell_n = np.bincount(e_cell, weights=e_n, minlength=n_cells)
    cell_s = np.bincount(e_cell, weights=e_s, minlength=n_cells)
    cell_q = np.bincount(e_cell, weights=e_q, minlength=n_cells)
    cell_h = np.bincount(e_cell, weights=e_h, minlength=n_cells)
    return _Data(factors, levels, n_levels, cell_codes, cell_n, cell_s, cell_q, cell_h,
                 e_cell.astype(np.int64), e_unit.astype(np.int64), e_n, e_s, e_q, e_h,
                 n_units, n_rows, y_mean)


# --------------------------------------------------------------------------------------------------
# v(S) for all subsets, Shapley and Sobol totals (vectorized over replicates)
# --------------------------------------------------------------------------------------------------


class _Subsets:
    """Group maps of the present cells for every subset S of the factors (bit masks 0..2^k-1)."""

    def __init__(self, cell_codes: np.ndarray):
        n_cells, k = cell_codes.shape
        self.k = k
        self.n_masks = 1 << k
        self.sizes = np.array([bin(m).count("1") for m in range(self.n_masks)])
        cols, offsets, total = [], [], 0
        gids: list[np.ndarray] = []
        for mask in range(self.n_masks):
            if mask == 0:
                gid = np.zeros(n_cells, dtype=np.int64)
            else:  # the grouping of mask = that of mask without its top factor, crossed with it
                top = mask.bit_length() - 1
                prev = gids[mask ^ (1 << top)]
                width = int(cell_codes[:, top].max()) + 1
                gid = pd.factorize(prev * width + cell_codes[:, top])[0].astype(np.int64)
            gids.append(gid)
            offsets.append(total)
            cols.append(gid + total)
            total += int(gid.max()) + 1
        self.offsets = np.array(offsets)
        rows = np.tile(np.arange(n_cells), self.n_masks)
        self.G = sparse.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(cols))), shape=(n_cells, total))
        self.GT = self.G.T.tocsr()
        # Shapley weights: phi_j = sum_mask v(mask) * W[mask, j]
        w = [math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k) for s in range(k)]
        W = np.zeros((self.n_masks, k))
        for mask in range(self.n_masks):
            s = self.sizes[mask]
            for j in range(k):
                if mask >> j & 1:
                    W[mask, j] = w[s - 1]
                else:
                    W[mask, j] = -w[s]
        self.W = W
        self.full = self.n_masks - 1

    def group(self, x: np.ndarray) -> np.ndarray:
        """(R, C) cell values -> (R, total groups) group sums."""
        return np.asarray(self.GT @ np.atleast_2d(x).T).T

    def v(self, n: np.ndarray, s: np.ndarray, extra: np.ndarray, family: str) -> np.ndarray:
        """R^2 (gaussian) or deviance R^2 (binomial) of every subset grouping: (R, 2^k).

        ``n``, ``s``: (R, C) cell counts and sums; ``extra``: (R,) total sum of squares (gaussian)
        or total sum of y log y + (1-y) log(1-y) (binomial).
        """
        n, s = np.atleast_2d(n), np.atleast_2d(s)
        gn, gs = self.group(n), self.group(s)
        with np.errstate(divide="ignore", invalid="ignore"):
            if family == "gaussian":
                terms = np.where(gn > 0, gs * gs / np.where(gn > 0, gn, 1.0), 0.0)
                between = np.add.reduceat(terms, self.offsets, axis=1)
                base = between[:, :1]  # mask 0: one group = S_tot^2 / N
                sst = np.asarray(extra) - base[:, 0]
                v = (between - base) / sst[:, None]
            else:
                gf = np.clip(gn - gs, 0.0, None)
                ll = xlogy(gs, gs) + xlogy(gf, gf) - xlogy(gn, gn)
                LL = np.add.reduceat(ll, self.offsets, axis=1)
                base = LL[:, :1]
                dnull = np.asarray(extra) - base[:, 0]
                v = (LL - base) / dnull[:, None]
        v[~np.isfinite(v)] = np.nan  # a degenerate replicate (no spread left) gives no value
        return v

    def shapley(self, v: np.ndarray) -> np.ndarray:
        return v @ self.W

    def sobol_total(self, v: np.ndarray) -> np.ndarray:
        return np.stack([v[:, self.full] - v[:, self.full ^ (1 << j)] for j in range(self.k)], axis=1)


# --------------------------------------------------------------------------------------------------
# Type-II ANOVA (main effects + two-way interactions) on cell sufficient statistics
# --------------------------------------------------------------------------------------------------


def _independent_columns(X: np.ndarray) -> np.ndarray:
    if X.shape[1] == 0:
        return np.zeros(0, dtype=np.int64)
    _, R, piv = linalg.qr(X, mode="economic", pivoting=True)
    d = np.abs(np.diag(R))
    tol = d[0] * max(X.shape) * np.finfo(float).eps * 100 if d.size else 0.0
    rank = int((d > tol).sum())
    return np.sort(piv[:rank])


class _Anova:
    def __init__(self, data: _Data, family: str):
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


# --------------------------------------------------------------------------------------------------
# Bootstrap over items, within strata
# --------------------------------------------------------------------------------------------------


def _unit_strata(data: _Data, max_singleton_share: float = 0.1) -> tuple[np.ndarray, list[str], list[str]]:
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
        trial = _combine_codes(parts + [sig], U)
        sizes = np.bincount(trial)
        if U > 1 and np.mean(sizes[trial] == 1) > max_singleton_share:
            skipped.append(f)
            continue
        parts.append(sig)
        used.append(f)
    order = {f: i for i, f in enumerate(data.factors)}
    return _combine_codes(parts, U), sorted(used, key=order.get), sorted(skipped, key=order.get)


# --------------------------------------------------------------------------------------------------
# Noise floor by restricted permutation
# --------------------------------------------------------------------------------------------------


class _Permuter:
    """Permutes the labels of factor j within the cells of the other factors.

    Where a unit (item) occurs at several levels of j inside such a cell (crossed design), its entries
    are permuted among its own levels; units seen at one level only there are shuffled between units
    (nested design, or rows without an item column). Permuting labels among entries is the same as
    permuting the entries' sufficient statistics among fixed cell slots, which is what is done here.
    """

    def __init__(self, data: _Data, j: int):
        codes = data.cell_codes
        C, k = codes.shape
        self.n_cells = C
        cell_stratum = _combine_codes([codes[:, i] for i in range(k) if i != j], C)
        e_stratum = cell_stratum[data.e_cell]
        block, _ = pd.factorize(e_stratum * np.int64(data.n_units) + data.e_unit)
        e_size = np.bincount(block)[block]
        # crossed: blocks of m >= 2 entries (one unit, several levels of j, same other factors)
        self.crossed: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []
        for m in np.unique(e_size[e_size > 1]):
            m = int(m)
            idx = np.nonzero(e_size == m)[0]
            idx = idx[np.argsort(block[idx], kind="stable")].reshape(-1, m)
            table = np.array(list(itertools.permutations(range(m)))) if m <= 6 else None
            self.crossed.append((data.e_cell[idx], data.e_n[idx], data.e_s[idx], table))
        # pooled: entries alone in their block, shuffled within their stratum; kept sorted by
        # (stratum, cell) so that the cell sums of a shuffled segment are sums of contiguous chunks
        pooled = np.nonzero(e_size == 1)[0]
        pooled = pooled[np.lexsort((data.e_cell[pooled], e_stratum[pooled]))]
        p_cell = data.e_cell[pooled]
        self.p_n = data.e_n[pooled]
        self.p_s = data.e_s[pooled]
        self.p_unit_rows = bool(len(pooled)) and bool(np.all(self.p_n == 1.0))
        chunk = np.flatnonzero(np.diff(p_cell)) + 1
        self.chunk_starts = np.concatenate([[0], chunk]).astype(np.int64) if len(pooled) else chunk
        self.chunk_cells = p_cell[self.chunk_starts]
        p_stratum = e_stratum[pooled]
        bounds = np.flatnonzero(np.diff(p_stratum)) + 1
        starts = np.concatenate([[0], bounds]).astype(np.int64)
        ends = np.concatenate([bounds, [len(pooled)]]).astype(np.int64)
        keep = ends - starts > 1
        self.segments = list(zip(starts[keep].tolist(), ends[keep].tolist()))
        self.n_pooled = len(pooled)
        self.kind = ("within items" if self.crossed and not self.segments else
                     "between units" if self.segments and not self.crossed else
                     "mixed" if self.crossed else "none (no two entries to exchange)")

    def aggregate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Cell counts and sums after one random relabelling."""
        C = self.n_cells
        n = np.zeros(C)
        s = np.zeros(C)
        for cells, bn, bs, table in self.crossed:
            nb, m = cells.shape
            if m == 2:
                swap = rng.random(nb) < 0.5
                new = np.where(swap[:, None], cells[:, ::-1], cells)
            elif table is not None:
                new = np.take_along_axis(cells, table[rng.integers(0, len(table), nb)], axis=1)
            else:
                new = np.take_along_axis(cells, np.argsort(rng.random((nb, m)), axis=1), axis=1)
            new = new.ravel()
            n += np.bincount(new, weights=bn.ravel(), minlength=C)
            s += np.bincount(new, weights=bs.ravel(), minlength=C)
        if self.n_pooled:
            if self.p_unit_rows:  # one row per entry: the counts stay, only the values move
                vals = self.p_s.copy()
                for a, b in self.segments:
                    vals[a:b] = rng.permutation(vals[a:b])
                s[self.chunk_cells] += np.add.reduceat(vals, self.chunk_starts)
                n[self.chunk_cells] += np.add.reduceat(self.p_n, self.chunk_starts)
            else:
                perm = np.arange(self.n_pooled)
                for a, b in self.segments:
                    perm[a:b] = rng.permutation(perm[a:b])
                n[self.chunk_cells] += np.add.reduceat(self.p_n[perm], self.chunk_starts)
                s[self.chunk_cells] += np.add.reduceat(self.p_s[perm], self.chunk_starts)
        return n, s


# --------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------


def _single_threaded_blas():
    """All matrices here are small: threaded BLAS only spins, and on a busy 2-core machine it is
    dozens of times slower (measured: a 4072 x 79 QR went from 8 ms to 450 ms)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional; present with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def attribute(
    df: pd.DataFrame,
    response: str,
    factors: Sequence[str],
    item: str | Sequence[str] | None = None,
    family: str = "gaussian",
    bootstrap: int = 0,
    seed: int = 0,
    ci: float = 0.95,
    noise_floor_permutations: int = DEFAULT_NOISE_PERMUTATIONS,
) -> AttributionResult:
    """Variance (gaussian) or deviance (binomial) shares of ``response`` over ``factors``.

    ``item``: column(s) identifying the resampling unit (several columns form a composite key); without
    it every row is a unit. ``bootstrap``: replicates for the ``shapley`` interval (0: no interval).
    ``noise_floor_permutations``: permutations per factor for ``noise_floor`` (0: none).
    """
    with _single_threaded_blas():
        return _attribute(df, response, factors, item, family, bootstrap, seed, ci, noise_floor_permutations)


def _attribute(df, response, factors, item, family, bootstrap, seed, ci, noise_floor_permutations):
    factors = list(_as_list(factors))
    items = _as_list(item)
    bootstrap = check_int(bootstrap, "bootstrap", 0)
    noise_floor_permutations = check_int(noise_floor_permutations, "noise_floor_permutations", 0)
    seed = check_int(seed, "seed", 0)
    try:
        ci = float(ci)
    except (TypeError, ValueError):
        raise UserError(f"expected a number in (0, 1), got {ci!r}", field="ci") from None
    if not 0 < ci < 1:
        raise UserError(f"expected a number in (0, 1), got {ci}", field="ci")

    data = _prepare(df, response, factors, items, family)
    k = len(factors)
    subsets = _Subsets(data.cell_codes)
    extra_total = data.cell_q.sum() if family == "gaussian" else data.cell_h.sum()
    v = subsets.v(data.cell_n, data.cell_s, np.array([extra_total]), family)
    shap = subsets.shapley(v)[0]
    st = subsets.sobol_total(v)[0]
    v_all = float(v[0, subsets.full])
    first = [float(v[0, 1 << j]) for j in range(k)]

    anova = _Anova(data, family).table()
    total_ss = anova["total_ss"]
    scale = anova["scale"]

    ss_seed = np.random.SeedSequence(seed)
    boot_seq, perm_seq = ss_seed.spawn(2)

    # bootstrap ---------------------------------------------------------------------------------
    ci_low = np.full(k + 1, np.nan)
    ci_high = np.full(k + 1, np.nan)
    boot_info: dict[str, Any] = {"replicates": bootstrap, "ci": ci}
    strata, nested, not_stratified = _unit_strata(data)
    if bootstrap > 0:
        rng = np.random.Generator(np.random.PCG64(boot_seq))
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
        alpha = (1 - ci) / 2
        ci_low = np.nanquantile(bshap, alpha, axis=0)
        ci_high = np.nanquantile(bshap, 1 - alpha, axis=0)
        bvall = bv[:, subsets.full]
        boot_info.update({
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
        })

    # noise floor -------------------------------------------------------------------------------
    noise = np.full(k, np.nan)
    noise_info: dict[str, Any] = {"permutations": noise_floor_permutations, "quantile": NOISE_QUANTILE}
    if noise_floor_permutations > 0:
        per_factor = {}
        C = len(data.cell_n)
        for j, (f, seq) in enumerate(zip(factors, perm_seq.spawn(k))):
            rng = np.random.Generator(np.random.PCG64(seq))
            perm = _Permuter(data, j)
            pn = np.empty((noise_floor_permutations, C))
            ps = np.empty((noise_floor_permutations, C))
            for r in range(noise_floor_permutations):
                pn[r], ps[r] = perm.aggregate(rng)
            pv = subsets.v(pn, ps, np.full(noise_floor_permutations, extra_total), family)
            null = pv @ subsets.W[:, j]
            noise[j] = float(np.quantile(null, NOISE_QUANTILE))
            exceed = int(np.sum(null >= shap[j] - 1e-12))
            per_factor[f] = {
                "noise_floor": noise[j],
                "null_mean": float(null.mean()),
                "p_value": (1 + exceed) / (1 + noise_floor_permutations),
                "above_noise": bool(shap[j] > noise[j]),
                "permutation": perm.kind,
            }
        noise_info.update({
            "method": "restricted permutation of the factor's labels within the cells of the other factors "
                      "(within items where items are crossed with the factor, between items otherwise); "
                      "noise_floor = the quantile of the permuted factor's Shapley share",
            "factors": per_factor,
        })

    # table -------------------------------------------------------------------------------------
    rows = []
    ms_e = scale
    for j, f in enumerate(factors):
        e = anova["effects"][j]
        rows.append(_row(f, e, total_ss, ms_e, shap[j], st[j], ci_low[j], ci_high[j], noise[j]))
    for e in anova["effects"][k:]:
        rows.append(_row(e["effect"], e, total_ss, ms_e, np.nan, np.nan, np.nan, np.nan, np.nan))
    rows.append({"effect": RESIDUAL, "eta2": anova["residual_ss"] / total_ss, "omega2": np.nan,
                 "shapley": 1.0 - v_all, "sobol_total": 1.0 - v_all,
                 "ci_low": ci_low[k], "ci_high": ci_high[k], "noise_floor": np.nan})
    table = pd.DataFrame(rows, columns=COLUMNS)
    for c in COLUMNS[1:]:
        table[c] = table[c].astype(np.float64)

    C = len(data.cell_n)
    full_cells = math.prod(int(x) for x in data.n_levels)
    balanced = bool(C == full_cells and np.all(data.cell_n == data.cell_n[0]))
    measure = "R^2 (1 - within-group SS / total SS)" if family == "gaussian" else \
        "deviance R^2 (1 - D(S)/D(null); McFadden's R^2 for 0/1 outcomes)"
    details = {
        "method": {
            "v": f"v(S) = {measure} of the response on the full interaction of the factors in S",
            "shapley": "Shapley value of each factor under v (exact, all 2^k subsets); residual = 1 - v(all)",
            "sobol_total": "v(all) - v(all but the factor); residual = 1 - v(all)",
            "anova": ("type-II " + ("sums of squares" if family == "gaussian" else "likelihood-ratio (deviance) drops")
                      + " with all main effects and two-way interactions; higher orders pooled into the residual; "
                      "fitted on cell sufficient statistics (identical to the row-level fit)"),
            "eta2": "SS_effect / SS_total" + ("" if family == "gaussian" else " (deviance drop / null deviance)"),
            "omega2": "(SS_effect - df_effect * MS_E) / (SS_total + MS_E)"
                      + ("" if family == "gaussian" else " with MS_E = Pearson dispersion of the ANOVA model"),
            "interval": "percentile bootstrap of shapley over resampled items" if bootstrap else "none",
        },
        "family": family,
        "response": response,
        "factors": factors,
        "levels": {f: [to_jsonable(x) for x in lv] for f, lv in zip(factors, data.levels)},
        "item": items or None,
        "n_rows": data.n_rows,
        "n_units": data.n_units,
        "n_cells": C,
        "n_cells_full_grid": full_cells,
        "missing_cells": full_cells - C,
        "balanced": balanced,
        "response_mean": float(data.cell_s.sum() / data.cell_n.sum() + data.y_mean),
        "v_all": v_all,
        "first_order": dict(zip(factors, first)),
        "anova": {
            "total": total_ss, "total_df": anova["total_df"],
            "residual": anova["residual_ss"], "residual_df": anova["residual_df"],
            "ms_error": scale,
            "effects": {e["effect"]: {"ss": e["ss"], "df": e["df"]} for e in anova["effects"]},
        },
        "bootstrap": boot_info,
        "noise_floor": noise_info,
        "seed": seed,
    }
    if k <= 10:
        details["v"] = {(":".join(factors[j] for j in range(k) if m >> j & 1) or "(none)"): float(v[0, m])
                        for m in range(subsets.n_masks)}
    replicates = (pd.DataFrame(bshap, columns=[*factors, RESIDUAL]) if bootstrap > 0 else None)
    return AttributionResult(table=table, details=details, replicates=replicates)


def _row(name, e, total, ms_e, shap, st, lo, hi, nf) -> dict[str, Any]:
    ss, df_t = e["ss"], e["df"]
    eta2 = ss / total if np.isfinite(ss) else np.nan
    omega2 = (ss - df_t * ms_e) / (total + ms_e) if np.isfinite(ss) and np.isfinite(ms_e) else np.nan
    return {"effect": name, "eta2": eta2, "omega2": omega2, "shapley": shap, "sobol_total": st,
            "ci_low": lo, "ci_high": hi, "noise_floor": nf}


def check_int(x: Any, name: str, minimum: int) -> int:
    try:
        if isinstance(x, bool):
            raise TypeError
        val = int(x)
        if isinstance(x, float) and val != x:
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"expected a whole number, got {x!r}", field=name) from None
    if val < minimum:
        raise UserError(f"expected a whole number >= {minimum}, got {val}", field=name)
    return val
