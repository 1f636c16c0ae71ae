"""Predicted cells of an incomplete design, where a measured cell is missing (``explain``, the claims mapping).

``reprogrid estimate`` writes ``predicted_cells.csv``: one row per cell of the full grid of the varying factors,
with ``status`` (measured / predicted), the predicted mean and its interval (``ci_low``, ``ci_high``) and
``estimable`` (whether the prediction holds whatever the aliased effects are). Only unrun cells whose prediction
is estimable stand in for a measured one, and they are always labelled: the cells table gets a ``basis``
column (``measured`` / ``predicted``) and the interval of the prediction (``predicted_low``,
``predicted_high``); ``explain`` lists the path cells it took from predictions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reprogrid.catalogue import cell_text, level_text
from reprogrid.errors import UserError

VALUE_COLUMNS = ["n", "measured", "predicted", "ci_low", "ci_high", "status", "estimable"]
BASIS = "basis"  # measured / predicted
PREDICTED_LOW, PREDICTED_HIGH = "predicted_low", "predicted_high"


def read_predicted(path: str | Path, what: str = "--predicted") -> pd.DataFrame:
    """``predicted_cells.csv`` with its factor columns as text and its value columns checked."""
    from reprogrid.io import read_table

    p = Path(path)
    if not p.is_file():
        raise UserError("file not found", field=f"{what} {p}")
    head = pd.read_csv(p, nrows=0).columns
    factors = [c for c in head if c not in VALUE_COLUMNS]
    table = read_table(p, ["predicted", "ci_low", "ci_high", "status", "estimable"], what=what,
                       text_columns=factors)
    if not factors:
        raise UserError("no factor column (expected the factor columns of `reprogrid estimate`)", field=f"{what} {p}")
    return table


def factor_columns(predicted: pd.DataFrame) -> list[str]:
    return [c for c in predicted.columns if c not in VALUE_COLUMNS]


def unrun(predicted: pd.DataFrame) -> pd.DataFrame:
    """The rows that may stand in for a missing cell: unrun, with an estimable prediction."""
    est = predicted["estimable"].astype(str).str.lower().isin(["true", "1"])
    return predicted[(predicted["status"].astype(str) == "predicted") & est]


class Lookup:
    """Predicted means and intervals of the unrun cells, found by their levels (matched as canonical text)."""

    def __init__(self, predicted: pd.DataFrame):
        self.factors = factor_columns(predicted)
        rows = unrun(predicted)
        keys = rows[self.factors].map(level_text).agg("\t".join, axis=1) if len(rows) else pd.Series(dtype=str)
        self._by_key = {k: (float(r.predicted), float(r.ci_low), float(r.ci_high))
                        for k, r in zip(keys, rows.itertuples())}

    def get(self, cell: dict) -> tuple[float, float, float] | None:
        """(mean, low, high) of an unrun cell (factor -> level), or None. Factors of the cell that the
        predicted table does not vary must not be asked about: the table has one level of each."""
        if any(f not in cell for f in self.factors):
            return None
        return self._by_key.get("\t".join(level_text(cell[f]) for f in self.factors))


def with_predicted(cells: pd.DataFrame, predicted: pd.DataFrame, response: str = "score",
                   factor_names: list[str] | None = None) -> pd.DataFrame:
    """The measured cells (``basis`` measured) and every unrun cell with an estimable prediction (``basis``
    predicted: ``response`` = the predicted mean, ``predicted_low``/``predicted_high`` its interval, status ok,
    the other factor columns at the single level the measured cells share). ``factor_names``: the factor
    columns of ``cells`` (default: the catalogue's factors present)."""
    factors = factor_columns(predicted)
    missing = [f for f in factors if f not in cells.columns]
    if missing:
        raise UserError(f"the predicted cells vary {', '.join(missing)}, which the cells table lacks",
                        field="--predicted")
    out = cells.copy()
    out[BASIS] = "measured"
    out[PREDICTED_LOW] = np.nan
    out[PREDICTED_HIGH] = np.nan
    have = set(cells[factors].map(level_text).agg("\t".join, axis=1)) if len(cells) else set()
    rows = unrun(predicted)
    rows = rows[~rows[factors].map(level_text).agg("\t".join, axis=1).isin(have)] if len(rows) else rows
    if not len(rows):
        return out
    from reprogrid.catalogue import factor_names as catalogue_factors

    fixed = {}
    for f in factor_names if factor_names is not None else catalogue_factors():
        if f in cells.columns and f not in factors:
            vals = cells[f].dropna().unique()
            if len(vals) == 1:
                fixed[f] = vals[0]
    like = {c: cells[c] for c in factors}
    add = pd.DataFrame({f: [_as(like[f], v) for v in rows[f]] for f in factors})
    for f, v in fixed.items():
        add[f] = v
    add[response] = rows["predicted"].to_numpy(float)
    add[PREDICTED_LOW] = rows["ci_low"].to_numpy(float)
    add[PREDICTED_HIGH] = rows["ci_high"].to_numpy(float)
    add[BASIS] = "predicted"
    if "status" in cells.columns:
        add["status"] = "ok"
    if "cell_id" in cells.columns:
        names = [*factors, *fixed]
        add["cell_id"] = ["predicted " + cell_text({f: r[f] for f in names}) for _, r in add.iterrows()]
    return pd.concat([out, add], ignore_index=True)


def _as(column: pd.Series, text: str):
    """A level read as text, in the type the measured column holds it (so that 1024 stays an integer)."""
    for v in column.dropna().unique():
        if level_text(v) == level_text(text):
            return v
    return text
