"""The path of an explanation: input checks, the rows used, the factors (differing, held, averaged over,
constant) with their canonical level keys, and the cells of the path."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from reprogrid.catalogue import factor_names, level_sort_key, level_text, parse_level
from reprogrid.errors import UserError
from reprogrid.io import to_jsonable

MAX_DIFFERING = 16


def _columns_text(df: pd.DataFrame) -> str:
    return ", ".join(map(str, df.columns))


def check_input(df, response, low, high, item, bootstrap, level, factors) -> tuple[list[str], list[str]]:
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


def usable_rows(df: pd.DataFrame, response: str, factor_cols: list[str],
                 item: str | None) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows that enter the decomposition (``status`` "ok", a response), with the response as ``_resp``,
    and how many rows were left out for each reason. An infinite response, or a used row without a
    factor level or an item id, is refused (one line naming the column)."""
    resp = pd.to_numeric(df[response], errors="coerce")
    bad = resp.isna() & df[response].notna()
    if bad.any():
        example = df.loc[bad, response].iloc[0]
        raise UserError(f"column {response!r} is not numeric (e.g. {example!r})", field="--response")
    data = df.assign(_resp=resp)
    left_out: dict[str, int] = {}
    if "status" in data.columns and "status" not in factor_cols:
        ok = data["status"].astype(str) == "ok"
        if (~ok).any():
            left_out["status not ok"] = int((~ok).sum())
        data = data[ok]
    inf = np.isinf(data["_resp"].to_numpy(float))
    if inf.any():
        raise UserError(f"column {response!r} has {int(inf.sum())} infinite value(s); expected a finite number "
                        "(or an empty field for a row to leave out)", field="--response")
    missing = data["_resp"].isna()
    if missing.any():
        left_out[f"no {response}"] = int(missing.sum())
        data = data[~missing]
    for c in [*factor_cols, *([item] if item else [])]:
        n = int(data[c].isna().sum())
        if n:
            what = "item column" if c == item else "factor column"
            raise UserError(f"{what} {c!r} has {n} missing value(s) in rows that are used; expected a value "
                            "in every row", field=c)
    return data, left_out


class ExplainPath:
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
    """Canonical level text of every factor value; one original value per canonical text (text read from a
    file as the value it spells: "4096" -> 4096, "true" -> True; "None" and "NA" stay text)."""
    originals: dict[str, dict[str, Any]] = {}
    keys = {}
    for c in factor_cols:
        uniq = pd.unique(data[c])
        mapping = {u: level_text(u) for u in uniq}
        originals[c] = {}
        for u, k in mapping.items():
            # a level read as text is shown as the value it spells (as a level typed on the command line)
            originals[c].setdefault(k, _spelled(u) if isinstance(u, str) else to_jsonable(u))
        keys[c] = data[c].map(mapping)
    return originals, pd.DataFrame(keys, index=data.index)


def _spelled(text: str) -> Any:
    value = parse_level(text)
    return text if isinstance(value, float) and not math.isfinite(value) else value  # "nan", "inf" stay text


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
