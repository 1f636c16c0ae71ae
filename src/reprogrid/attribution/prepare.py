"""Input preparation: validated arguments, factor codes, and the sufficient statistics of cells and
entries (an entry is one (cell, item) pair; without an item column every row is its own item)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.special import xlogy

from reprogrid.errors import UserError

FAMILIES = ("gaussian", "binomial")
COLUMNS = ["effect", "eta2", "omega2", "shapley", "sobol_total", "ci_low", "ci_high", "noise_floor",
           "shapley_adj", "adj_ci_low", "adj_ci_high", "sobol_total_adj"]
RESIDUAL = "residual"
CSV_NAME = "variance_shares.csv"
JSON_NAME = "variance_shares.json"
MAX_FACTORS = 14


@dataclass
class Data:
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
    aliased: dict[str, list[str]] = field(default_factory=dict)  # merged name -> the aliased factors


# --------------------------------------------------------------------------------------------------
# Small helpers


def varying_factors(df: pd.DataFrame, factors: Iterable[str]) -> list[str]:
    """The factors (in the given order) that take more than one value in ``df`` (missing values ignored)."""
    out = []
    for f in factors:
        if f not in df.columns:
            raise UserError(f"no such column in the table (columns: {fmt_cols(df.columns)})", field=f)
        if df[f].nunique(dropna=True) > 1:
            out.append(f)
    return out


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


def fmt_cols(cols: Iterable[Any], limit: int = 12) -> str:
    cols = [str(c) for c in cols]
    more = f", ... ({len(cols)} in all)" if len(cols) > limit else ""
    return ", ".join(cols[:limit]) + more


def as_list(x: str | Sequence[str] | None) -> list[str]:
    if x is None:
        return []
    if isinstance(x, str):
        return [x]
    return list(x)


def combine_codes(code_arrays: list[np.ndarray], n_rows: int) -> np.ndarray:
    """Dense ids 0..G-1 for the combinations of several code arrays (no overflow for any number)."""
    if not code_arrays:
        return np.zeros(n_rows, dtype=np.int64)
    combined = pd.factorize(code_arrays[0])[0].astype(np.int64)
    for codes in code_arrays[1:]:
        width = int(codes.max()) + 1 if len(codes) else 1
        combined, _ = pd.factorize(combined * width + codes)
        combined = combined.astype(np.int64)
    return combined


def _check_columns(available: Sequence[str], wanted: Sequence[str], where: Any) -> None:
    missing = [c for c in wanted if c not in available]
    if missing:
        raise UserError(
            f"column {missing[0]!r} not found in {where} (columns: {fmt_cols(available)})",
            field=missing[0],
        )


def _factorize(col: pd.Series, name: str) -> tuple[np.ndarray, list[Any]]:
    if col.isna().any():
        raise UserError(f"factor column has {int(col.isna().sum())} missing values; expected a level in every row",
                        field=name)
    try:
        codes, uniques = pd.factorize(col, sort=True)
    except TypeError:  # mixed types that do not sort
        codes, uniques = pd.factorize(col.astype(str), sort=True)
    return codes.astype(np.int64), list(uniques)


# --------------------------------------------------------------------------------------------------
# Validation


def check_arguments(df: Any, response: str, factors: list[str], items: list[str], family: str) -> None:
    """Refuse bad arguments (one UserError naming the field) before any column is read."""
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
        raise UserError(f"the table has {n_rows} rows; expected at least 2", field="rows")


def response_values(df: pd.DataFrame, response: str, family: str) -> np.ndarray:
    """The response as float64; refuses non-numeric, missing, infinite and (binomial) out-of-range values."""
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
    return y


def factor_codes(df: pd.DataFrame, factors: list[str]) -> tuple[list[np.ndarray], list[list[Any]]]:
    """Level codes (sorted levels) of every factor; a factor needs two levels and no missing value."""
    codes_list, levels = [], []
    for f in factors:
        codes, uniq = _factorize(df[f], f)
        if len(uniq) < 2:
            raise UserError(f"factor has one level ({uniq[0]!r}); a factor needs at least two "
                            "(drop constant factors, see varying_factors)", field=f)
        codes_list.append(codes)
        levels.append(uniq)
    return codes_list, levels


# --------------------------------------------------------------------------------------------------
# Sufficient statistics


def cells_of(codes_list: list[np.ndarray], n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(cell of each row, level codes of each present cell), cells in lexicographic order of their codes."""
    cell_row = combine_codes(codes_list, n_rows)
    n_cells = int(cell_row.max()) + 1
    first = np.full(n_cells, n_rows, dtype=np.int64)
    np.minimum.at(first, cell_row, np.arange(n_rows, dtype=np.int64))
    cell_codes = np.stack([c[first] for c in codes_list], axis=1)
    # order cells lexicographically by level codes (stable, readable)
    order = np.lexsort(cell_codes.T[::-1])
    remap = np.empty(n_cells, dtype=np.int64)
    remap[order] = np.arange(n_cells)
    return remap[cell_row], cell_codes[order]


def find_aliases(cell_codes: np.ndarray, n_levels: np.ndarray) -> list[list[int]]:
    """Groups of two or more factors that are relabellings of each other (aliased, perfectly confounded):
    in the present cells each level of one goes with exactly one level of the other and vice versa
    (e.g. a context length in tokens and the same length written "4k"). Indices in factor order."""
    k = cell_codes.shape[1]
    root = list(range(k))
    for i in range(k):
        for j in range(i + 1, k):
            if n_levels[i] != n_levels[j] or root[j] != j:
                continue
            pairs = np.unique(cell_codes[:, i] * np.int64(n_levels[j]) + cell_codes[:, j])
            if len(pairs) == n_levels[i]:  # every level of i present, each with one level of j: a bijection
                root[j] = root[i]
    groups: dict[int, list[int]] = {}
    for j, r in enumerate(root):
        groups.setdefault(r, []).append(j)
    return [g for g in groups.values() if len(g) > 1]


def merge_aliases(factors: list[str], levels: list[list[Any]], cell_codes: np.ndarray, groups: list[list[int]]):
    """One factor per aliased group, named ``A+B``, at the place of its first member; its level ``c`` is
    the list of the members' levels that go together. Returns factors, levels, cell codes, aliased."""
    drop = {j for g in groups for j in g[1:]}
    first = {g[0]: g for g in groups}
    names, merged_levels, aliased = [], [], {}
    for j, f in enumerate(factors):
        if j in drop:
            continue
        if j not in first:
            names.append(f)
            merged_levels.append(levels[j])
            continue
        members = first[j]
        name = "+".join(factors[m] for m in members)
        at = [int(np.flatnonzero(cell_codes[:, j] == c)[0]) for c in range(len(levels[j]))]
        merged_levels.append([[levels[m][cell_codes[i, m]] for m in members] for i in at])
        names.append(name)
        aliased[name] = [factors[m] for m in members]
    keep = [j for j in range(len(factors)) if j not in drop]
    # a dropped member is a function of its group's first member, which comes before it: the
    # lexicographic order of the cells is unchanged
    return names, merged_levels, cell_codes[:, keep], aliased


def _entries(df: pd.DataFrame, items: list[str], cell_row: np.ndarray, yv: np.ndarray, hv: np.ndarray):
    """Per (cell, unit) entry: cell, unit, count, sum, sum of squares, sum of h; and the number of units."""
    n_rows = len(cell_row)
    if not items:  # every row is its own unit
        return (cell_row, np.arange(n_rows, dtype=np.int64), np.ones(n_rows), yv, yv * yv, hv), n_rows
    item_codes = []
    for it in items:
        col = df[it]
        if col.isna().any():
            raise UserError(f"item column has {int(col.isna().sum())} missing values", field=it)
        item_codes.append(pd.factorize(col)[0].astype(np.int64))
    unit_row = combine_codes(item_codes, n_rows)
    n_units = int(unit_row.max()) + 1
    key = cell_row * n_units + unit_row
    ent, e_idx = np.unique(key, return_inverse=True)
    m = len(ent)
    sums = [np.bincount(e_idx, minlength=m).astype(np.float64)]
    sums += [np.bincount(e_idx, weights=w, minlength=m) for w in (yv, yv * yv, hv)]
    return (ent // n_units, ent % n_units, *sums), n_units


def prepare(df: pd.DataFrame, response: str, factors: list[str], items: list[str], family: str) -> Data:
    """Validate the input and reduce it to cell and entry sufficient statistics."""
    check_arguments(df, response, factors, items, family)
    y = response_values(df, response, family)
    codes_list, levels = factor_codes(df, factors)
    if np.ptp(y) == 0:
        what = ("response is constant; there is no variance to attribute" if family == "gaussian" else
                "binomial response is constant; there is no deviance to attribute")
        raise UserError(what, field=response)
    if family == "gaussian":
        y_mean = float(y.mean())
        yv = y - y_mean
        hv = np.zeros_like(yv)
    else:
        y_mean = 0.0
        yv = y
        hv = xlogy(y, y) + xlogy(1.0 - y, 1.0 - y)
    n_rows = len(df)
    cell_row, cell_codes = cells_of(codes_list, n_rows)
    n_levels = np.array([len(lv) for lv in levels], dtype=np.int64)
    aliased: dict[str, list[str]] = {}
    groups = find_aliases(cell_codes, n_levels)
    if groups:
        factors, levels, cell_codes, aliased = merge_aliases(factors, levels, cell_codes, groups)
        n_levels = np.array([len(lv) for lv in levels], dtype=np.int64)
    n_cells = len(cell_codes)
    (e_cell, e_unit, e_n, e_s, e_q, e_h), n_units = _entries(df, items, cell_row, yv, hv)
    cell_n, cell_s, cell_q, cell_h = (np.bincount(e_cell, weights=w, minlength=n_cells) for w in (e_n, e_s, e_q, e_h))
    return Data(factors, levels, n_levels, cell_codes, cell_n, cell_s, cell_q, cell_h,
                e_cell.astype(np.int64), e_unit.astype(np.int64), e_n, e_s, e_q, e_h,
                n_units, n_rows, y_mean, aliased)
