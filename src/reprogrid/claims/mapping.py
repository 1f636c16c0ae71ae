"""Claims placed on a grid: the cells that match a claim's model and stated protocol, grouped by the
factors its source leaves open (``claim_profiles``, ``map_claims_to_cells``), and the published record
itself as rows on the grid's factors (``published_record``).

Values are kept on the fraction scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from reprogrid.catalogue import factor_names, level_sort_key
from reprogrid.catalogue import level_text as canon
from reprogrid.claims.registry import Claim, exact
from reprogrid.errors import UserError
from reprogrid.stats import fraction_scores

MAP_COLUMNS = ["claim_id", "model", "benchmark", "claim_value", "tolerance", "n_cells", "n_profiles", "n_failed",
               "unknown_factors", "open_levels", "grid_min", "grid_mean", "grid_max", "nearest", "in_range",
               "aggregated", "missing", "unverified", "cell_ids", "n_predicted"]


def grid_factors(cells: pd.DataFrame, factors: list[str] | None = None) -> list[str]:
    """The factor columns of a cells table: ``factors`` if given, else the catalogue's names present."""
    if factors is not None:
        missing = [f for f in factors if f not in cells.columns]
        if missing:
            raise UserError(f"not columns of the cells table: {', '.join(missing)}", field="--factors")
        return list(factors)
    return [f for f in factor_names() if f in cells.columns]


def check_cells(cells: pd.DataFrame) -> None:
    if not isinstance(cells, pd.DataFrame):
        raise UserError("expected a table (DataFrame)", field="cells")
    for col in ("cell_id", "score", "model"):
        if col not in cells.columns:
            raise UserError(f"the cells table has no {col!r} column", field="cells")


@dataclass
class Profiles:
    """The grid's readings of one claim: one row per combination of the levels the source left open."""
    claim: Claim
    table: pd.DataFrame  # open factor columns (canonical text), score, cell_ids (tuple), n_items (total)
    unknown: list[str]  # grid factors the source does not state (open)
    open_levels: dict[str, list[str]]  # unknown factor -> levels among the matched cells
    missing: list[str]  # why some or all readings are missing
    unverified: list[str]  # stated factors the grid does not record
    n_failed: int = 0
    aggregated: bool = False  # profiles are means over the claim's component levels


def _select(claim: Claim, cells: pd.DataFrame, keys: pd.DataFrame, stated: dict, agg_f: str | None,
            missing: list[str]) -> tuple[pd.Series, list[str]]:
    """Cells at the stated levels (and at the component levels of an aggregate); reasons for gaps."""
    sel = pd.Series(True, index=cells.index)
    for f, v in stated.items():
        if f not in keys.columns:
            continue
        want = canon(v)
        if not (keys[f] == want).any():
            levels = sorted(keys[f].unique(), key=level_sort_key)
            missing.append(f"{f}={canon(v)} is not in the grid (levels: {', '.join(levels)})")
        sel &= keys[f] == want
    comp_levels: list[str] = []
    if agg_f:
        comp_levels = [canon(x) for x in claim.components]
        for lvl in comp_levels:
            if not (keys[agg_f] == lvl).any():
                missing.append(f"{agg_f}={lvl} (a component) is not in the grid")
        sel &= keys[agg_f].isin(comp_levels)
    return sel, comp_levels


def _group_rows(sub: pd.DataFrame, ks: pd.DataFrame, unknown: list[str], agg_f: str | None,
                comp_levels: list[str], weights: list[float], missing: list[str]) -> list[dict]:
    score = fraction_scores(sub)
    n_it = pd.to_numeric(sub["n_items"], errors="coerce") if "n_items" in sub.columns \
        else pd.Series(np.nan, index=sub.index)
    groups: dict[tuple, list] = {}
    for idx, gk in zip(ks.index, map(tuple, ks[unknown].to_numpy().tolist()) if unknown else [()] * len(ks)):
        groups.setdefault(gk, []).append(idx)
    rows = []
    for gk in sorted(groups, key=lambda t: tuple(level_sort_key(x) for x in t)):
        idx = groups[gk]
        row = dict(zip(unknown, gk))
        if agg_f:
            per = score.loc[idx].groupby(ks.loc[idx, agg_f]).mean()
            lacking = [lvl for lvl in comp_levels if lvl not in per.index]
            if lacking:
                desc = ", ".join(f"{f}={v}" for f, v in row.items()) or "(all)"
                missing.append(f"{desc}: no ok cell at {agg_f}={', '.join(lacking)}")
                continue
            row["score"] = float(np.average(per.loc[comp_levels].to_numpy(float), weights=weights))
        else:
            row["score"] = float(score.loc[idx].mean())
        row["cell_ids"] = tuple(sub.loc[idx, "cell_id"].astype(str))
        row["n_items"] = float(n_it.loc[idx].sum()) if n_it.loc[idx].notna().all() else np.nan
        rows.append(row)
    return rows


def claim_profiles(claim: Claim, cells: pd.DataFrame, factors: list[str], *,
                   model: str | None = None) -> Profiles:
    """Select the cells matching ``claim``'s model and stated protocol; group by the open factors.

    ``model`` overrides the claim's model (for "the other model under this claim's conditions").
    For an aggregate claim over a grid factor, a profile is the mean over the component levels
    (weighted by the claim's ``weights``, if any).
    """
    stated = {"model": model or claim.model, **claim.protocol}
    if "scale" in factors and "scale" not in stated:
        stated["scale"] = claim.scale  # the scale a claim is reported on is a stated level
    keys = pd.DataFrame({f: cells[f].map(canon) for f in factors}, index=cells.index)
    ok = cells["status"].astype(str) == "ok" if "status" in cells.columns else pd.Series(True, index=cells.index)
    missing: list[str] = []
    unverified = [f"{f}={canon(v)}" for f, v in claim.protocol.items() if f not in factors]
    agg_f = claim.aggregate_over if (claim.components and claim.aggregate_over in factors) else None
    sel, comp_levels = _select(claim, cells, keys, stated, agg_f, missing)
    unknown = [f for f in factors if f not in stated and f != agg_f]
    n_failed = int((sel & ~ok).sum())
    sel &= ok
    sub, ks = cells[sel], keys[sel]
    open_levels = {f: sorted(ks[f].unique(), key=level_sort_key) for f in unknown}
    weights = [float(w) for w in claim.weights.values()] if claim.weights else [1.0] * len(comp_levels)
    rows = _group_rows(sub, ks, unknown, agg_f, comp_levels, weights, missing) if len(sub) else []
    if not len(sub) and not missing:
        desc = ", ".join(f"{f}={canon(v)}" for f, v in stated.items() if f in factors)
        missing.append(f"no ok cell with {desc}" + (f" ({n_failed} failed)" if n_failed else ""))
    table = pd.DataFrame(rows, columns=[*unknown, "score", "cell_ids", "n_items"])
    return Profiles(claim, table, unknown, open_levels, missing, unverified, n_failed, bool(agg_f))


def map_claims_to_cells(claims: list[Claim], cells_df: pd.DataFrame, factor_names: list[str] | None = None
                        ) -> pd.DataFrame:
    """One row per claim: the grid's range over the levels the source left open.

    Columns: claim_id, model, benchmark, claim_value (fraction), tolerance (fraction: half a unit of the
    last reported decimal), n_cells, n_profiles, n_failed, unknown_factors ("a;b"), open_levels
    ("f=1|2;g=x|y", factors with several levels only), grid_min, grid_mean, grid_max, nearest (the grid
    reading closest to the claim), in_range (claim within [min - tol, max + tol]), aggregated,
    missing ("; "-joined reasons), unverified (stated factors the grid does not record), cell_ids,
    n_predicted (how many of those cells are predicted, not run: cells whose ``basis`` column, from
    :func:`reprogrid.designs.predicted.with_predicted`, says so).
    """
    check_cells(cells_df)
    factors = grid_factors(cells_df, factor_names)
    predicted_ids = predicted_cell_ids(cells_df)
    rows = []
    for c in claims:
        p = claim_profiles(c, cells_df, factors)
        scores = p.table["score"].to_numpy(float)
        cell_ids = sorted({cid for ids in p.table["cell_ids"] for cid in ids})
        has = len(scores) > 0
        rows.append({
            "claim_id": c.id, "model": c.model, "benchmark": c.benchmark,
            "claim_value": c.fraction, "tolerance": c.tolerance,
            "n_cells": len(cell_ids), "n_profiles": len(p.table), "n_failed": p.n_failed,
            "unknown_factors": ";".join(p.unknown),
            "open_levels": ";".join(f"{f}={'|'.join(v)}" for f, v in p.open_levels.items() if len(v) > 1),
            "grid_min": float(scores.min()) if has else np.nan,
            "grid_mean": float(scores.mean()) if has else np.nan,
            "grid_max": float(scores.max()) if has else np.nan,
            "nearest": float(scores[np.argmin(np.abs(scores - c.fraction))]) if has else np.nan,
            "in_range": bool(has and scores.min() - c.tolerance <= c.fraction <= scores.max() + c.tolerance),
            "aggregated": p.aggregated,
            "missing": "; ".join(p.missing), "unverified": ";".join(p.unverified),
            "cell_ids": ";".join(cell_ids), "n_predicted": len(predicted_ids.intersection(cell_ids)),
        })
    return pd.DataFrame(rows, columns=MAP_COLUMNS)


def predicted_cell_ids(cells: pd.DataFrame) -> set[str]:
    """Ids of the cells that are predicted (unrun cells of a fractional design), not measured."""
    from reprogrid.designs.predicted import BASIS

    if BASIS not in cells.columns:
        return set()
    return set(cells.loc[cells[BASIS].astype(str) == "predicted", "cell_id"].astype(str))


PUBLISHED_COLUMNS = ["claim_id", "row", "source", "status", "model", "model_name", "benchmark", "value", "reported",
                     "scale", "context_length", "attn_implementation", "aggregation", "aggregate", "stated",
                     "unknown", "in_grid"]
PLACED = ("context_length", "attn_implementation", "aggregation")


def _aggregate_text(c: Claim) -> str:
    over = c.aggregate_over or "its components"
    if c.weights:
        return f"weighted mean over {over} ({', '.join(f'{canon(k)}:{canon(w)}' for k, w in c.weights.items())})"
    return f"mean over {over}"


def published_record(claims: list[Claim], cells: pd.DataFrame | None = None,
                     factor_names: list[str] | None = None) -> pd.DataFrame:
    """The published numbers as rows on the grid's factors (fraction scale).

    One row per claim value (``row`` = ``value``, or ``aggregate`` for a mean of components) and one per
    component (``row`` = ``component``, its key placed on ``aggregate_over`` when that is a placed factor).
    ``context_length``, ``attn_implementation``, ``aggregation``: the level the source states (or the
    component's), empty when unknown; ``stated``: every other stated factor; ``unknown``: the grid's
    factors the source leaves open; ``status``: the verification status; ``in_grid``: the model is a
    level of the grid (empty without a cells table).
    """
    factors = grid_factors(cells, factor_names) if cells is not None else list(factor_names or PLACED)
    grid_models = {canon(m) for m in cells["model"]} if cells is not None and "model" in cells.columns else None
    rows = []
    for c in claims:
        entries = [("aggregate" if c.components else "value", c.value, {})]
        entries += [("component", v, {c.aggregate_over: k} if c.aggregate_over else {})
                    for k, v in (c.components or {}).items()]
        for kind, value, own in entries:
            levels = {**c.protocol, **own}
            rows.append({
                "claim_id": c.id, "row": kind, "source": c.source_key, "status": c.status, "model": c.model,
                "model_name": c.model_name, "benchmark": c.benchmark, "value": float(exact(value) / c.unit),
                "reported": value, "scale": c.scale,
                **{f: canon(levels[f]) if f in levels else "" for f in PLACED},
                "aggregate": (_aggregate_text(c) if kind == "aggregate" else
                              f"component of {c.id}" if kind == "component" else ""),
                "stated": ";".join(f"{k}={canon(v)}" for k, v in levels.items() if k not in PLACED),
                "unknown": ";".join(f for f in factors if f != "model" and f not in levels),
                "in_grid": "" if grid_models is None else canon(c.model) in grid_models,
            })
    return pd.DataFrame(rows, columns=PUBLISHED_COLUMNS)
