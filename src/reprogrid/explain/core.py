"""The decomposition: exact Shapley contributions along the path, their item-bootstrap intervals, and
the result."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from reprogrid.catalogue import level_text
from reprogrid.errors import UserError
from reprogrid.explain.paired import TEST_COLUMNS, contrast_tests
from reprogrid.explain.path import MAX_DIFFERING, ExplainPath, check_input, usable_rows
from reprogrid.io import to_jsonable
from reprogrid.stats import ITEM_SEP, item_bootstrap_means, percentile_interval

__all__ = ["MAX_DIFFERING", "ExplainResult", "explain", "parse_levels", "shapley_matrix"]


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
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> rows left out before the decomposition
    bootstrap: int = 0
    seed: int = 0
    level: float = 0.95
    gap_test: dict[str, Any] = field(default_factory=dict)  # the paired test of high - low (see explain.paired)
    predicted_cells: list[dict] = field(default_factory=list)  # path cells taken from predictions (unrun)

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
                 "ci_high": f(r.ci_high), "low_level": to_jsonable(r.low_level), "high_level": to_jsonable(r.high_level),
                 **{c: (getattr(r, c) if c == "test" else f(getattr(r, c))) for c in TEST_COLUMNS
                    if c in self.contributions.columns}}
                for r in self.contributions.itertuples()
            ],
            "missing_cells": [{k: to_jsonable(v) for k, v in c.items()} for c in self.missing_cells],
            "gap_test": {k: (f(v) if k != "test" else v) for k, v in self.gap_test.items()},
            "n_items": self.n_items, "left_out": dict(self.left_out), "bootstrap": self.bootstrap, "seed": self.seed, "level": self.level,
            "basis": "partly predicted" if self.predicted_cells else "measured",
            "predicted_cells": [{k: (f(v) if k in ("predicted", "ci_low", "ci_high") else to_jsonable(v))
                                 for k, v in c.items()} for c in self.predicted_cells],
        }


def _empty_contributions() -> pd.DataFrame:
    return pd.DataFrame({"factor": pd.Series(dtype=str), "contribution": pd.Series(dtype=float),
                         "ci_low": pd.Series(dtype=float), "ci_high": pd.Series(dtype=float),
                         "low_level": pd.Series(dtype=object), "high_level": pd.Series(dtype=object)})


def explain(df: pd.DataFrame, response: str, low: dict, high: dict, item: str | None = None,
            bootstrap: int = 1000, seed: int = 0, factors: list[str] | None = None,
            level: float = 0.95, predicted: pd.DataFrame | None = None) -> ExplainResult:
    """Exact Shapley decomposition of v(high) - v(low) over the factors whose levels differ.

    See the docstring of :mod:`reprogrid.explain` for the definitions. Raises UserError for invalid input; returns a result
    with ``missing_cells`` (and empty contributions) when cells on the path are absent. ``predicted``: the
    ``predicted_cells.csv`` table of ``reprogrid estimate``: a missing path cell whose prediction is estimable
    is taken from it (listed in ``predicted_cells``; see :func:`_fill_predicted`).
    """
    factor_cols, named = check_input(df, response, low, high, item, bootstrap, level, factors)
    data, left_out = usable_rows(df, response, factor_cols, item)
    path = ExplainPath(data, factor_cols, named, low, high)
    result = ExplainResult(contributions=_empty_contributions(), differing=path.differing,
                           held={**path.held_orig, **path.constant}, averaged_over=path.averaged_levels(),
                           left_out=left_out, bootstrap=bootstrap if item else 0, seed=seed, level=level)
    cells, missing = path.cells()
    fill: dict[int, tuple[float, float, float]] = {}
    if missing and predicted is not None:
        fill, missing = _predicted_path_cells(path, cells, predicted)
        result.predicted_cells = [{**path_cell, "predicted": m, "ci_low": lo, "ci_high": hi}
                                  for path_cell, (m, lo, hi) in zip(_cells_at(path, fill), fill.values())]
    if missing:
        result.missing_cells = missing
        return result
    cell_index = {key: j for j, key in enumerate(cells)}
    gidx = path.group_keys().map(cell_index).to_numpy()
    with warnings.catch_warnings():  # predicted cells have no rows: their empty means are filled below
        warnings.simplefilter("ignore", RuntimeWarning)
        cell_means, reps, result.n_items, mat, tasks = _cell_values(path.data, gidx, len(cells), item, bootstrap,
                                                                    seed)
    if fill:
        _fill_predicted(cell_means, reps, fill, level, seed)
    _decompose(result, path, cell_means, reps, level)
    if mat is not None and not fill:  # a paired test needs the items of every path cell
        _paired_tests(result, path, mat, tasks, seed)
    return result


def _path_masks(path: ExplainPath):
    for mask in range(1 << len(path.differing)):
        vk = path.vertex_keys(mask)
        for combo in path.combos:
            yield mask, vk, combo


def _predicted_path_cells(path: ExplainPath, cells: list[tuple], predicted: pd.DataFrame):
    """The missing path cells an estimable prediction covers (cell index -> (mean, low, high)) and those
    still missing (factor -> level dicts)."""
    from reprogrid.designs.predicted import Lookup

    lookup = Lookup(predicted)
    present = set(path.group_keys().tolist())
    fill, missing = {}, []
    for j, (key, (mask, vk, combo)) in enumerate(zip(cells, _path_masks(path))):
        if key in present:
            continue
        cell = path._cell(mask, vk, combo)
        got = lookup.get(cell)
        if got is None:
            missing.append(cell)
        else:
            fill[j] = got
    return fill, missing


def _cells_at(path: ExplainPath, fill: dict) -> list[dict]:
    return [path._cell(mask, vk, combo) for j, (mask, vk, combo) in enumerate(_path_masks(path)) if j in fill]


def _fill_predicted(cell_means: np.ndarray, reps: np.ndarray | None, fill: dict, level: float, seed: int) -> None:
    """Predicted path cells: the predicted mean; in the bootstrap, normal draws with the standard error
    that the prediction's interval implies (independent of the items of the measured cells)."""
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    rng = np.random.default_rng([seed, 16])
    for j, (m, lo, hi) in fill.items():
        cell_means[j] = m
        if reps is not None:
            reps[:, j] = rng.normal(m, max(hi - lo, 0.0) / (2 * z), reps.shape[0])


def _paired_tests(result: ExplainResult, path: ExplainPath, mat: np.ndarray, tasks, seed: int) -> None:
    """Paired, task-clustered test of every contribution and of the gap (columns :data:`TEST_COLUMNS`)."""
    k, n_combo = len(path.differing), len(path.combos)
    W = shapley_matrix(k)
    A = np.repeat(W, n_combo, axis=1) / n_combo  # cells are mask-major, combination-minor
    gap = np.zeros((1, A.shape[1]))
    gap[0, :n_combo], gap[0, -n_combo:] = -1.0 / n_combo, 1.0 / n_combo
    tests = contrast_tests(mat, np.vstack([A, gap]) if k else gap, tasks, seed)
    result.gap_test = tests.iloc[-1].to_dict()
    if k:
        for c in TEST_COLUMNS:
            result.contributions[c] = tests[c].to_numpy()[:k]

def _cell_values(data: pd.DataFrame, gidx: np.ndarray, n_cells: int, item: str | None, bootstrap: int,
                 seed: int):
    """Mean response of every path cell; with ``item``, the item-bootstrap replicates, the item count, the
    cells x items matrix and the task of every item (None without a task column)."""
    if item is None:
        sums = np.bincount(gidx, weights=data["_resp"].to_numpy(float), minlength=n_cells)
        counts = np.bincount(gidx, minlength=n_cells)
        return sums / counts, None, None, None, None
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
    return np.nanmean(mat, axis=1), reps, int(len(uniq_items)), mat, groups


def _decompose(result: ExplainResult, path: ExplainPath, cell_means: np.ndarray, reps: np.ndarray | None,
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
