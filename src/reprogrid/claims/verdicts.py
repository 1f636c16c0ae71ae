"""The report's answers for a pair of conflicting claims (``verdicts``), fraction scale, JSON-ready.

Intervals: with a samples table, the item bootstrap of ``reprogrid.stats`` (``ItemBootstrap.from_tables``
over the whole samples table, the same construction the report uses), so the verdicts and the report
print the same interval for the same reading given the same replicates, seed and level; a reading's
interval is that of the equal-weight mean of its cells. Without samples: a normal approximation with
the variance bound p(1-p)/n per cell.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from reprogrid.catalogue import cell_text
from reprogrid.catalogue import level_text as canon
from reprogrid.claims.checks import check_claims, default_pair
from reprogrid.claims.mapping import Profiles, check_cells, claim_profiles, grid_factors, predicted_cell_ids
from reprogrid.claims.registry import Claim
from reprogrid.errors import UserError
from reprogrid.explain import explain
from reprogrid.io import to_jsonable
from reprogrid.stats import ItemBootstrap, fraction_scores


class Intervals:
    """Intervals of readings (equal-weight means of cells): item bootstrap, or a normal approximation."""

    def __init__(self, cells: pd.DataFrame, samples: pd.DataFrame | None, bootstrap: int, seed: int,
                 level: float, aggregation: str = "task_mean"):
        self.level = level
        self.boot = None
        if samples is not None and bootstrap > 1:
            for col in ("cell_id", "item_id", "score"):
                if col not in samples.columns:
                    raise UserError(f"the samples table has no {col!r} column", field="samples")
            self.boot = ItemBootstrap.from_tables(samples, measured_cells(cells), bootstrap, seed, level,
                                                  default=aggregation)
            self.method = (f"bootstrap over items, stratified by task ({bootstrap} replicates, seed {seed}, "
                           f"percentile {level:.0%})")
        else:
            self.method = "normal approximation, variance bound p(1-p)/n per cell (no samples table)"
        ids = cells["cell_id"].astype(str)
        self._score = dict(zip(ids, fraction_scores(cells)))
        n = pd.to_numeric(cells["n_items"], errors="coerce") if "n_items" in cells.columns else [math.nan] * len(cells)
        self._n = dict(zip(ids, n))
        self.predicted = predicted_cell_ids(cells)
        self._pred_ci = {}
        if self.predicted:
            from reprogrid.designs.predicted import PREDICTED_HIGH, PREDICTED_LOW

            lo = fraction_scores(cells, PREDICTED_LOW)
            hi = fraction_scores(cells, PREDICTED_HIGH)
            self._pred_ci = {i: (a, b) for i, a, b in zip(ids, lo, hi) if i in self.predicted}

    def interval(self, cell_ids, score: float) -> tuple[float, float] | None:
        if self.predicted.intersection(cell_ids):
            return self._with_predicted(list(cell_ids), score)
        if self.boot is not None:
            if not self.boot.has(cell_ids):
                return None
            e = self.boot.estimate(cell_ids)
            return (e.low, e.high) if e.has_ci else None
        var = 0.0
        for c in cell_ids:
            p, n = self._score.get(c, math.nan), self._n.get(c, math.nan)
            if not (n and n > 0) or math.isnan(p):
                return None
            p = min(max(p, 0.0), 1.0)
            var += p * (1 - p) / n
        from scipy.stats import norm

        z = float(norm.ppf(0.5 + self.level / 2))
        se = math.sqrt(var) / len(cell_ids)
        return max(0.0, score - z * se), min(1.0, score + z * se)


    def _with_predicted(self, cell_ids: list[str], score: float) -> tuple[float, float] | None:
        """A reading with predicted cells: normal, the predicted cells' standard errors from their intervals,
        the measured cells' from the variance bound p(1-p)/n."""
        from scipy.stats import norm

        z = float(norm.ppf(0.5 + self.level / 2))
        var = 0.0
        for c in cell_ids:
            if c in self._pred_ci:
                lo, hi = self._pred_ci[c]
                var += ((hi - lo) / (2 * z)) ** 2
                continue
            p, n = self._score.get(c, math.nan), self._n.get(c, math.nan)
            if not (n and n > 0) or math.isnan(p):
                return None
            p = min(max(p, 0.0), 1.0)
            var += p * (1 - p) / n
        se = math.sqrt(var) / len(cell_ids)
        return score - z * se, score + z * se


def readings(p: Profiles, iv: Intervals, target: float, tol: float) -> list[dict]:
    """Profiles as dicts sorted by distance to ``target``, each with its interval and consistency."""
    out = []
    for _, row in p.table.iterrows():
        score = float(row["score"])
        ci = iv.interval(list(row["cell_ids"]), score)
        lo, hi = ci if ci is not None else (score, score)
        out.append({
            "levels": {f: row[f] for f in p.unknown},
            "score": score, "ci": [lo, hi] if ci is not None else None,
            "distance": score - target,
            "consistent": bool(lo - tol <= target <= hi + tol),
            "cell_ids": list(row["cell_ids"]),
            "predicted": len(iv.predicted.intersection(row["cell_ids"])),  # cells predicted, not run
        })
    out.sort(key=lambda r: (abs(r["distance"]), r["score"]))
    return out


def claim_brief(c: Claim) -> dict:
    return {"id": c.id, "source": c.source, "model": c.model, "model_name": c.model_name, "value": c.fraction,
            "reported": c.value, "scale": c.scale, "tolerance": c.tolerance, "protocol": c.protocol,
            "verification": {"status": c.status, "where": (c.verification or {}).get("where")},
            "aggregate": ({"kind": c.aggregate, "over": c.aggregate_over,
                           "levels": [canon(x) for x in c.components],
                           "weights": list(c.weights.values()) if c.weights else None} if c.components else None)}


def _levels_text(levels: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in levels.items()) or "the single matching cell"


def _explanation(c: Claim, cells: pd.DataFrame, factors: list[str], iv: Intervals) -> tuple[dict, Profiles, list]:
    p = claim_profiles(c, cells, factors)
    reads = readings(p, iv, c.fraction, c.tolerance)
    n_cons = sum(r["consistent"] for r in reads)
    if not reads:
        status = "no_cells"
        summary = f"{c.id}: no grid reading under its stated protocol ({'; '.join(p.missing)})"
    elif n_cons == 0:
        status = "unmatched"
        b = reads[0]
        summary = (f"{c.id}: no grid reading under its stated protocol reaches {c.fraction:.4f}; the closest is "
                   f"{b['score']:.4f} ({_levels_text(b['levels'])}), off by {b['distance']:+.4f}")
    else:
        status = "matched"
        b = reads[0]
        which = "the only consistent reading" if n_cons == 1 else f"the closest of {n_cons} consistent readings"
        summary = (f"{c.id}: {which} is {_levels_text(b['levels'])}: "
                   f"{b['score']:.4f} vs claimed {c.fraction:.4f}")
    if reads and reads[0]["predicted"]:
        summary += f" (predicted, not run: {reads[0]['predicted']} of its {len(reads[0]['cell_ids'])} cells)"
    return ({
        "claim": claim_brief(c), "status": status, "summary": summary,
        "unknown_factors": p.unknown,
        "open_levels": p.open_levels, "n_readings": len(reads), "n_consistent": n_cons,
        "best": reads[0] if reads else None, "alternatives": reads[1:4],
        "missing": p.missing, "unverified": p.unverified, "n_failed": p.n_failed,
    }, p, reads)


def _num(x: Any) -> float | None:
    v = pd.to_numeric(x, errors="coerce")
    return None if pd.isna(v) else float(v)


def top_factor(shares: pd.DataFrame | None) -> dict:
    """The effect with the largest Shapley share, its interval and whether it is separated from the next."""
    if shares is None:
        return {"available": False, "reason": "no variance shares given (reprogrid attribute)"}
    need = {"effect", "shapley", "ci_low", "ci_high"}
    if not need <= set(shares.columns):
        raise UserError(f"variance shares need columns {', '.join(sorted(need))}; got "
                        f"{', '.join(map(str, shares.columns))}", field="shares")
    t = shares[~shares["effect"].astype(str).str.lower().isin({"residual", "error", "total", "noise"})]
    t = t.assign(shapley=pd.to_numeric(t["shapley"], errors="coerce")).dropna(subset=["shapley"])
    if not len(t):
        return {"available": False, "reason": "the variance shares table has no effect rows"}
    t = t.sort_values("shapley", ascending=False, kind="stable")
    top = t.iloc[0]
    res = {"available": True, "effect": str(top["effect"]), "shapley": float(top["shapley"]),
           "ci": [_num(top["ci_low"]), _num(top["ci_high"])]}
    if len(t) > 1:
        second = t.iloc[1]
        s_hi = _num(second["ci_high"])
        res["runner_up"] = {"effect": str(second["effect"]), "shapley": float(second["shapley"]),
                            "ci": [_num(second["ci_low"]), s_hi]}
        lo = res["ci"][0]
        res["separated"] = bool(lo is not None and s_hi is not None and lo > s_hi)
    return res


def pairwise(low: Claim, high: Claim, lo_reads: list, hi_reads: list, lo_p: Profiles, hi_p: Profiles,
             cells: pd.DataFrame, samples: pd.DataFrame | None, factors: list[str], bootstrap: int,
             seed: int, level: float, predicted: pd.DataFrame | None = None) -> dict:
    """Shapley decomposition between the best grid readings of the two claims."""
    if not lo_reads or not hi_reads:
        return {"available": False, "reason": "a claim of the pair has no grid reading"}
    if lo_p.aggregated != hi_p.aggregated or (
            lo_p.aggregated and (low.aggregate_over != high.aggregate_over
                                 or sorted(map(canon, low.components)) != sorted(map(canon, high.components)))):
        return {"available": False,
                "reason": "the two claims aggregate differently (one is a mean over levels the other is not)"}
    cell_of = cells.set_index(cells["cell_id"].astype(str))
    agg = low.aggregate_over if lo_p.aggregated else None

    def levels(reads) -> dict:
        row = cell_of.loc[reads[0]["cell_ids"][0]]
        return {f: canon(row[f]) for f in factors if f != agg}

    lo_lv, hi_lv = levels(lo_reads), levels(hi_reads)
    df, item = (samples, "item_id") if samples is not None else (measured_cells(cells), None)
    df = df.assign(_score=fraction_scores(df))
    if agg:
        keep = {canon(x) for x in low.components}
        df = df[df[agg].map(canon).isin(keep)]
    fac = [f for f in factors if f in df.columns]
    res = explain(df, "_score", lo_lv, hi_lv, item=item, bootstrap=bootstrap if item else 0, seed=seed,
                  factors=fac, level=level, predicted=_fraction(predicted, df))
    if res.missing_cells:
        return {"available": False, "reason": "cells on the path are missing",
                "missing_cells": [cell_text(c) for c in res.missing_cells]}
    summ = res.summary()
    contrib = sorted(summ["contributions"], key=lambda r: -abs(r["contribution"] or 0))
    return {"available": True, "low_levels": lo_lv, "high_levels": hi_lv, "low_value": summ["low_value"],
            "high_value": summ["high_value"], "gap": summ["gap"], "gap_ci": summ["gap_ci"],
            "gap_test": summ["gap_test"], "contributions": contrib, "largest": contrib[0]["factor"] if contrib else None,
            "averaged_over": summ["averaged_over"], "basis": summ["basis"],
            "predicted_cells": [cell_text({k: v for k, v in c.items() if k not in ("predicted", "ci_low", "ci_high")})
                                for c in summ["predicted_cells"]]}


def measured_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells that were run (without the predicted cells :func:`with_predicted` adds)."""
    from reprogrid.designs.predicted import BASIS

    return cells[cells[BASIS].astype(str) != "predicted"] if BASIS in cells.columns else cells


def _fraction(predicted: pd.DataFrame | None, df: pd.DataFrame) -> pd.DataFrame | None:
    """The predicted table on the fraction scale of ``_score`` (a percent study predicts on 0-100)."""
    if predicted is None or "scale" not in df.columns or "scale" in predicted.columns:
        return predicted
    if (df["scale"].astype(str) == "percent").all():
        return predicted.assign(**{c: pd.to_numeric(predicted[c]) / 100.0 for c in ("predicted", "ci_low", "ci_high")})
    return predicted


def reproducibility(low: Claim, high: Claim, cells: pd.DataFrame, factors: list[str], iv: Intervals) -> dict:
    """The high claim's model under the low claim's stated conditions (and the low claim's aggregation)."""
    cond = claim_profiles(low, cells, factors, model=high.model)
    reads = readings(cond, iv, high.fraction, high.tolerance)
    n_cons = sum(r["consistent"] for r in reads)
    scores = [r["score"] for r in reads]
    if not reads:
        status = "undetermined"
        text = f"no grid reading of {high.model} under the conditions of {low.id}: {'; '.join(cond.missing)}"
    elif n_cons == len(reads):
        status = "reproduces"
        text = f"{high.model} reaches {high.fraction:.4f} under every reading of {low.id}'s stated conditions"
    elif n_cons == 0:
        status = "does_not_reproduce"
        text = (f"{high.model} under {low.id}'s stated conditions scores {min(scores):.4f}"
                f"-{max(scores):.4f}, not {high.fraction:.4f}")
    else:
        status = "depends_on_unknowns"
        text = (f"{high.model} reaches {high.fraction:.4f} in {n_cons} of {len(reads)} readings of {low.id}'s "
                f"stated conditions: it depends on the factors {low.id} leaves open")
    lows = [r["ci"][0] if r["ci"] else r["score"] for r in reads]
    highs = [r["ci"][1] if r["ci"] else r["score"] for r in reads]
    return {
        "model": high.model, "conditions_of": low.id, "conditions": low.protocol,
        "aggregate": claim_brief(low)["aggregate"], "claimed": high.fraction, "tolerance": high.tolerance,
        "status": status, "summary": text, "unknown_factors": cond.unknown, "open_levels": cond.open_levels,
        "range": [min(scores), max(scores)] if reads else None,
        "interval": [min(lows), max(highs)] if reads else None,
        "readings": reads, "missing": cond.missing, "unverified": cond.unverified,
    }


def verdicts(claims: list[Claim], cells_df: pd.DataFrame, samples_df: pd.DataFrame | None = None,
             factor_names: list[str] | None = None, pair: tuple[str, str] | None = None,
             variance_shares: pd.DataFrame | None = None, bootstrap: int = 1000, seed: int = 0,
             level: float = 0.95, aggregation: str = "task_mean", predicted: pd.DataFrame | None = None) -> dict:
    """The report's answers for a pair of conflicting claims (JSON-serialisable, fraction scale).

    - ``most_explanatory_factor``: the effect with the largest Shapley share of the grid's variance
      (from ``variance_shares``, columns effect, shapley, ci_low, ci_high), with its interval and whether
      it is separated from the runner-up.
    - ``pairwise``: the exact Shapley split of the gap between the best grid readings of the two claims.
    - ``explanations``: for every claim, the grid reading consistent with its stated protocol whose score
      is closest to the claim (levels of the factors the source left open, score, interval, distance).
    - ``reproducibility``: the high claim's model under the low claim's stated conditions (open factors
      give a range; each reading has an item-bootstrap interval), compared with the high claim's value.
    - ``pair.not_traceable``: the pair's claims whose verification says they are not in their cited source.
    ``pair`` = (low id, high id); default: the lowest and the highest claim value.
    ``predicted``: a fractional design's ``predicted_cells.csv``: its unrun cells with estimable predictions
    join the grid (:func:`reprogrid.designs.predicted.with_predicted`), and every reading, explanation and
    pairwise path that uses one says so (``predicted``, ``basis``, ``predicted_cells``).
    """
    claims = list(claims)
    if not claims:
        raise UserError("no claims", field="claims")
    check_cells(cells_df)
    if predicted is not None:
        from reprogrid.designs.predicted import with_predicted

        cells_df = with_predicted(cells_df, predicted, factor_names=factor_names)
    factors = grid_factors(cells_df, factor_names)
    by_id = {c.id: c for c in claims}
    if pair is None:
        low, high = default_pair(claims)
    else:
        for cid in pair:
            if cid not in by_id:
                raise UserError(f"unknown claim id {cid!r}; ids: {', '.join(by_id)}", field="--pair")
        low, high = by_id[pair[0]], by_id[pair[1]]
    iv = Intervals(cells_df, samples_df, bootstrap, seed, level, aggregation)
    explanations, profiles, reads = {}, {}, {}
    for c in claims:
        explanations[c.id], profiles[c.id], reads[c.id] = _explanation(c, cells_df, factors, iv)
    findings = check_claims(claims, (low.id, high.id))
    return to_jsonable({
        "scale": "fraction",
        "interval_method": iv.method,
        "factors": factors,
        "pair": {"low": claim_brief(low), "high": claim_brief(high), "spread": high.fraction - low.fraction,
                 "not_traceable": [f.claim_id for f in findings if f.kind == "not_traceable"]},
        "most_explanatory_factor": top_factor(variance_shares),
        "pairwise": pairwise(low, high, reads[low.id], reads[high.id], profiles[low.id], profiles[high.id],
                             cells_df, samples_df, factors, bootstrap, seed, level, predicted),
        "explanations": [explanations[c.id] for c in claims],
        "reproducibility": reproducibility(low, high, cells_df, factors, iv),
        "findings": [{"claim_id": f.claim_id, "kind": f.kind, "message": f.message} for f in findings],
    })
