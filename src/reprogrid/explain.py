"""Decompose the gap between two protocols into exact Shapley contributions of the factors that differ.

``reprogrid explain INPUT --response COL --low "f=a,g=b" --high "f=c,g=d" [--item COL] --out DIR``

Definitions (``explain()`` is the API, the CLI is a thin shell around it):

- D = the factors whose ``--low`` and ``--high`` levels differ, in the order they are named.
- For S a subset of D, v(S) = the mean response of the cell in which the factors of S take their
  ``--high`` level and the other factors of D their ``--low`` level. v(empty) = low, v(D) = high.
- The contribution of factor i is its Shapley value
  ``phi_i = sum over S in D minus i of |S|! (|D|-|S|-1)! / |D|! * (v(S + i) - v(S))``,
  computed exactly by enumerating the 2^|D| cells of the path (|D| <= 16). The contributions sum to
  high - low (exactly in real arithmetic; to float rounding, ~1e-15, in practice). An interaction of
  two factors is split half and half.
- A factor named on one side only, or on both sides with the same level, is *held* at that level.
- Other factor columns of INPUT (by default the study's factor catalogue present in INPUT; ``--factors``
  overrides) that still have several levels among the selected rows are *averaged over*: each vertex
  of the path is the equal-weight mean over the grid cells of that vertex (one per combination of the
  averaged factors' levels). Every vertex must have every combination that any vertex has; a
  combination that is absent from a vertex is a missing cell.
- Rows with ``status`` other than "ok" (when INPUT has a ``status`` column) and rows whose response
  is NaN are left out; a cell left without rows is missing.
- With ``--item COL`` the input is per item (the ``samples`` table): a cell's value is the mean of the
  response over its items, and intervals come from a bootstrap over items. An item is identified by
  (``task``, COL) when INPUT has a ``task`` column, else by COL. Items are resampled *jointly*: one
  draw of item ids applies to every cell that has those items; items are stratified by the set of
  cells they appear in (e.g. items that differ across context lengths are resampled within their
  own group), so each cell keeps its item count. Percentile intervals, seeded (``--seed``).
  Without ``--item`` the input is per cell and ``ci_low``/``ci_high`` are empty.

Missing cells: ``explain()`` never raises for them; it returns a result with ``missing_cells`` (one
dict of factor -> level per missing grid cell) and no contributions. The CLI then prints one
``missing cell: f=a, g=b`` line per cell on stderr, writes ``DIR/missing_cells.yaml`` (a
``missing_cells:`` list of factor -> level mappings, ready to be added to a study config) and exits 1.
Invalid input (unknown column, bad level syntax, non-numeric response) exits 2 with one ``error:`` line.

Outputs on success: ``DIR/contributions.csv`` (``factor, contribution, ci_low, ci_high, low_level,
high_level``) and ``DIR/summary.json`` (low/high values with intervals, gap, held and averaged factors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from reprogrid.catalogue import factor_names, level_sort_key, level_text, parse_level
from reprogrid.errors import UserError
from reprogrid.io import to_jsonable
from reprogrid.stats import ITEM_SEP, item_bootstrap_means, percentile_interval

MAX_DIFFERING = 16
def parse_levels(spec: str, what: str) -> dict[str, Any]:
    """``"f=a,g=b"`` -> ``{"f": "a", "g": "b"}`` (levels kept as text; matched canonically)."""
    out: dict[str, Any] = {}
    spec = (spec or "").strip()
    if not spec:
        return out
    for part in spec.split(","):
        part = part.strip()
        if not part:
            raise UserError(f"empty entry in {spec!r}; expected 'factor=level,factor=level'", field=what)
        if "=" not in part:
            raise UserError(f"{part!r} is not 'factor=level'", field=what)
        name, level = (t.strip() for t in part.split("=", 1))
        if not name or not level:
            raise UserError(f"{part!r} is not 'factor=level' (empty factor or level)", field=what)
        if name in out:
            raise UserError(f"factor {name!r} is given twice", field=what)
        out[name] = level
    return out


# ---------------------------------------------------------------------------------------------------
# Shapley weights


def shapley_matrix(k: int) -> np.ndarray:
    """W (k x 2^k) with phi = W @ v, v indexed by bitmask (bit i set = factor i at its high level)."""
    fact = [math.factorial(i) for i in range(k + 1)]
    w = [fact[s] * fact[k - s - 1] / fact[k] for s in range(k)] if k else []
    W = np.zeros((k, 1 << k))
    for mask in range(1 << k):
        size = bin(mask).count("1")
        for i in range(k):
            if mask >> i & 1:
                W[i, mask] += w[size - 1]
            else:
                W[i, mask] -= w[size]
    return W


# ---------------------------------------------------------------------------------------------------


@dataclass
class ExplainResult:
    contributions: pd.DataFrame  # factor, contribution, ci_low, ci_high, low_level, high_level
    missing_cells: list[dict] = field(default_factory=list)
    low_value: float | None = None
    high_value: float | None = None
    low_ci: tuple[float, float] | None = None
    high_ci: tuple[float, float] | None = None
    gap_ci: tuple[float, float] | None = None
    differing: list[str] = field(default_factory=list)
    held: dict[str, Any] = field(default_factory=dict)
    averaged_over: dict[str, list] = field(default_factory=dict)
    path_values: dict[str, float] = field(default_factory=dict)  # "f=lvl,g=lvl" -> v(S)
    n_items: int | None = None
    bootstrap: int = 0
    seed: int = 0
    level: float = 0.95

    @property
    def complete(self) -> bool:
        return not self.missing_cells

    @property
    def gap(self) -> float | None:
        if self.low_value is None or self.high_value is None:
            return None
        return self.high_value - self.low_value

    def summary(self) -> dict:
        def f(x):
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

        def pair(t):
            return None if t is None else [f(t[0]), f(t[1])]

        return {
            "complete": self.complete,
            "low_value": f(self.low_value), "low_ci": pair(self.low_ci),
            "high_value": f(self.high_value), "high_ci": pair(self.high_ci),
            "gap": f(self.gap), "gap_ci": pair(self.gap_ci),
            "differing": list(self.differing),
            "held": {k: to_jsonable(v) for k, v in self.held.items()},
            "averaged_over": {k: [to_jsonable(x) for x in v] for k, v in self.averaged_over.items()},
            "path_values": {k: f(v) for k, v in self.path_values.items()},
            "contributions": [
                {"factor": r.factor, "contribution": f(r.contribution), "ci_low": f(r.ci_low),
                 "ci_high": f(r.ci_high), "low_level": to_jsonable(r.low_level), "high_level": to_jsonable(r.high_level)}
                for r in self.contributions.itertuples()
            ],
            "missing_cells": [{k: to_jsonable(v) for k, v in c.items()} for c in self.missing_cells],
            "n_items": self.n_items, "bootstrap": self.bootstrap, "seed": self.seed, "level": self.level,
        }


def _empty_contributions() -> pd.DataFrame:
    return pd.DataFrame({"factor": pd.Series(dtype=str), "contribution": pd.Series(dtype=float),
                         "ci_low": pd.Series(dtype=float), "ci_high": pd.Series(dtype=float),
                         "low_level": pd.Series(dtype=object), "high_level": pd.Series(dtype=object)})


def explain(df: pd.DataFrame, response: str, low: dict, high: dict, item: str | None = None,
            bootstrap: int = 1000, seed: int = 0, factors: list[str] | None = None,
            level: float = 0.95) -> ExplainResult:
    """Exact Shapley decomposition of v(high) - v(low) over the factors whose levels differ.

    See the module docstring for the definitions. Raises UserError for invalid input; returns a result
    with ``missing_cells`` (and empty contributions) when cells on the path are absent.
    """
    factor_cols, named = _check_input(df, response, low, high, item, bootstrap, level, factors)
    data = _usable_rows(df, response, factor_cols)
    path = _Path(data, factor_cols, named, low, high)
    result = ExplainResult(contributions=_empty_contributions(), differing=path.differing,
                           held={**path.held_orig, **path.constant}, averaged_over=path.averaged_levels(),
                           bootstrap=bootstrap if item else 0, seed=seed, level=level)
    cells, missing = path.cells()
    if missing:
        result.missing_cells = missing
        return result
    cell_index = {key: j for j, key in enumerate(cells)}
    gidx = path.group_keys().map(cell_index).to_numpy()
    cell_means, reps, result.n_items = _cell_values(path.data, gidx, len(cells), item, bootstrap, seed)
    _decompose(result, path, cell_means, reps, level)
    return result


def _columns_text(df: pd.DataFrame) -> str:
    return ", ".join(map(str, df.columns))


def _check_input(df, response, low, high, item, bootstrap, level, factors) -> tuple[list[str], list[str]]:
    """Refuse invalid arguments; return the factor columns (in table order) and the named factors."""
    if not isinstance(df, pd.DataFrame):
        raise UserError("expected a table (DataFrame)", field="input")
    if response not in df.columns:
        raise UserError(f"no column {response!r}; columns: {_columns_text(df)}", field="--response")
    if item is not None and item not in df.columns:
        raise UserError(f"no column {item!r}; columns: {_columns_text(df)}", field="--item")
    if bootstrap < 0:
        raise UserError(f"expected a count >= 0, got {bootstrap}", field="--bootstrap")
    if not 0 < level < 1:
        raise UserError(f"expected a level in (0, 1), got {level}", field="--level")
    for side, levels in (("--low", low), ("--high", high)):
        for name in levels:
            if name not in df.columns:
                raise UserError(f"factor {name!r} is not a column of the input; columns: {_columns_text(df)}",
                                field=side)
            if name in (response, item):
                raise UserError(f"{name!r} is the response or item column, not a factor", field=side)
    if factors is None:
        factor_cols = [c for c in factor_names() if c in df.columns]
    else:
        unknown = [c for c in factors if c not in df.columns]
        if unknown:
            raise UserError(f"not columns of the input: {', '.join(unknown)}", field="--factors")
        factor_cols = list(factors)
    named = list(dict.fromkeys([*low, *high]))
    factor_cols = list(dict.fromkeys([*[c for c in df.columns if c in factor_cols or c in named]]))
    for c in factor_cols:
        if c in (response, item):
            raise UserError(f"{c!r} is the response or item column, not a factor", field="--factors")
    return factor_cols, named


def _usable_rows(df: pd.DataFrame, response: str, factor_cols: list[str]) -> pd.DataFrame:
    """The rows that enter the decomposition (``status`` "ok", a response), with the response as ``_resp``."""
    resp = pd.to_numeric(df[response], errors="coerce")
    bad = resp.isna() & df[response].notna()
    if bad.any():
        example = df.loc[bad, response].iloc[0]
        raise UserError(f"column {response!r} is not numeric (e.g. {example!r})", field="--response")
    data = df.assign(_resp=resp)
    if "status" in data.columns and "status" not in factor_cols:
        data = data[data["status"].astype(str) == "ok"]
    return data[data["_resp"].notna()]


class _Path:
    """The factors of the path (differing, held, averaged over, constant) and the canonical level keys."""

    def __init__(self, data: pd.DataFrame, factor_cols: list[str], named: list[str], low: dict, high: dict):
        self.factor_cols, self.low, self.high = factor_cols, low, high
        self.originals, kdf = _level_keys(data, factor_cols)
        self.held, self.differing = _split_named(named, low, high)
        sel = pd.Series(True, index=data.index)
        for name, k in self.held.items():
            sel &= kdf[name] == k
        for name in self.differing:
            sel &= kdf[name].isin([level_text(low[name]), level_text(high[name])])
        self.data, self.kdf = data[sel], kdf[sel]
        kdf = self.kdf
        others = [c for c in factor_cols if c not in named]
        self.averaged = [c for c in others if kdf[c].nunique() > 1]
        self.constant = {c: self.orig(c, kdf[c].iloc[0], None) for c in others if kdf[c].nunique() == 1}
        self.combos = (sorted(set(map(tuple, kdf[self.averaged].to_numpy().tolist()))) if self.averaged else [()])
        if not len(self.data):
            self.combos = [()] if not self.averaged else self.combos
        self.held_orig = {n: self.orig(n, kk, low.get(n, high.get(n))) for n, kk in self.held.items()}

    def orig(self, c: str, k: str, given: Any) -> Any:
        return self.originals[c].get(k, parse_level(str(given)) if isinstance(given, str) else given)

    def averaged_levels(self) -> dict[str, list]:
        return {c: [self.orig(c, v, None) for v in sorted(self.kdf[c].unique(), key=level_sort_key)]
                for c in self.averaged}

    def vertex_keys(self, mask: int) -> dict[str, str]:
        return {n: level_text(self.high[n]) if mask >> i & 1 else level_text(self.low[n])
                for i, n in enumerate(self.differing)}

    def group_keys(self) -> pd.Series:
        """The (differing levels, averaged levels) key of every selected row."""
        group_cols = self.differing + self.averaged
        if group_cols:
            return pd.Series(list(map(tuple, self.kdf[group_cols].to_numpy().tolist())), index=self.kdf.index)
        return pd.Series([()] * len(self.kdf), index=self.kdf.index, dtype=object)

    def cells(self) -> tuple[list[tuple], list[dict]]:
        """Every cell of the path (mask-major, combo-minor) and the missing ones as factor -> level."""
        present = set(self.group_keys().tolist())
        cells: list[tuple] = []
        missing: list[dict] = []
        for mask in range(1 << len(self.differing)):
            vk = self.vertex_keys(mask)
            for combo in self.combos:
                key = tuple(vk[n] for n in self.differing) + tuple(combo)
                cells.append(key)
                if key not in present:
                    missing.append(self._cell(mask, vk, combo))
        return cells, missing

    def _cell(self, mask: int, vk: dict[str, str], combo: tuple) -> dict:
        cell = {}
        for c in self.factor_cols:
            if c in self.held:
                cell[c] = self.held_orig[c]
            elif c in vk:
                given = self.high[c] if mask >> self.differing.index(c) & 1 else self.low[c]
                cell[c] = self.orig(c, vk[c], given)
            elif c in self.averaged:
                cell[c] = self.orig(c, combo[self.averaged.index(c)], None)
            elif c in self.constant:
                cell[c] = self.constant[c]
        return cell


def _level_keys(data: pd.DataFrame, factor_cols: list[str]) -> tuple[dict[str, dict[str, Any]], pd.DataFrame]:
    """Canonical level text of every factor value; one original value per canonical text."""
    originals: dict[str, dict[str, Any]] = {}
    keys = {}
    for c in factor_cols:
        uniq = pd.unique(data[c])
        mapping = {u: level_text(u) for u in uniq}
        originals[c] = {}
        for u, k in mapping.items():
            originals[c].setdefault(k, to_jsonable(u))
        keys[c] = data[c].map(mapping)
    return originals, pd.DataFrame(keys, index=data.index)


def _split_named(named: list[str], low: dict, high: dict) -> tuple[dict[str, str], list[str]]:
    """Named factors held at one level (one side only, or the same level) and those that differ."""
    held, differing = {}, []
    for name in named:
        lo_k = level_text(low[name]) if name in low else None
        hi_k = level_text(high[name]) if name in high else None
        if lo_k is None or hi_k is None or lo_k == hi_k:
            held[name] = lo_k if lo_k is not None else hi_k
        else:
            differing.append(name)
    if len(differing) > MAX_DIFFERING:
        raise UserError(f"{len(differing)} factors differ; at most {MAX_DIFFERING} (2^k cells)", field="--low/--high")
    return held, differing


def _cell_values(data: pd.DataFrame, gidx: np.ndarray, n_cells: int, item: str | None, bootstrap: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    """Mean response of every path cell; with ``item``, the item-bootstrap replicates and the item count."""
    if item is None:
        sums = np.bincount(gidx, weights=data["_resp"].to_numpy(float), minlength=n_cells)
        counts = np.bincount(gidx, minlength=n_cells)
        return sums / counts, None, None
    by_task = "task" in data.columns and item != "task"
    ikey = (data["task"].astype(str) + ITEM_SEP if by_task else "") + data[item].astype(str)
    codes, uniq_items = pd.factorize(ikey, sort=True)
    mat_sum = np.zeros((n_cells, len(uniq_items)))
    mat_cnt = np.zeros((n_cells, len(uniq_items)))
    np.add.at(mat_sum, (gidx, codes), data["_resp"].to_numpy(float))
    np.add.at(mat_cnt, (gidx, codes), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mat = np.where(mat_cnt > 0, mat_sum / np.where(mat_cnt > 0, mat_cnt, 1), np.nan)
    groups = np.array([k.split(ITEM_SEP, 1)[0] for k in uniq_items]) if by_task else None
    reps = item_bootstrap_means(mat, bootstrap, seed, groups=groups) if bootstrap > 0 else None
    return np.nanmean(mat, axis=1), reps, int(len(uniq_items))


def _decompose(result: ExplainResult, path: _Path, cell_means: np.ndarray, reps: np.ndarray | None,
               level: float) -> None:
    """Vertex values, Shapley contributions and (with replicates) their intervals, into ``result``."""
    differing, low, high = path.differing, path.low, path.high
    k, n_combo = len(differing), len(path.combos)
    v = cell_means.reshape(1 << k, n_combo).mean(axis=1)
    W = shapley_matrix(k)
    phi = W @ v
    result.low_value, result.high_value = float(v[0]), float(v[-1])
    result.path_values = {
        ",".join(f"{n}={level_text(path.orig(n, kk, None))}" for n, kk in path.vertex_keys(mask).items())
        or "(none)": float(v[mask])
        for mask in range(1 << k)
    }
    ci_lo = np.full(k, np.nan)
    ci_hi = np.full(k, np.nan)
    if reps is not None:
        vb = reps.reshape(reps.shape[0], 1 << k, n_combo).mean(axis=2)  # B x 2^k
        phib = vb @ W.T  # B x k
        if k:
            ci_lo, ci_hi = percentile_interval(phib, level)
        lo_i, hi_i = percentile_interval(vb[:, [0, -1]], level)
        result.low_ci = (float(lo_i[0]), float(hi_i[0]))
        result.high_ci = (float(lo_i[1]), float(hi_i[1]))
        g_lo, g_hi = percentile_interval(vb[:, -1] - vb[:, 0], level)
        result.gap_ci = (float(g_lo), float(g_hi))
    result.contributions = pd.DataFrame({
        "factor": differing,
        "contribution": phi.astype(float),
        "ci_low": np.asarray(ci_lo, dtype=float),
        "ci_high": np.asarray(ci_hi, dtype=float),
        "low_level": [path.orig(n, level_text(low[n]), low[n]) for n in differing],
        "high_level": [path.orig(n, level_text(high[n]), high[n]) for n in differing],
    }) if k else _empty_contributions()
