"""Consistency checks of claims that need no model: one ``Finding`` per problem.

``reprogrid claims check FILE... [--pair LOW,HIGH]`` prints one line per finding
(``FILE: CLAIM_ID: KIND: message``); exit 1 if any finding, 0 if none, 2 if a file is invalid.
Kinds, in the order they are printed:

- ``not_traceable``: a claim of the pair (``--pair``, else the lowest and the highest value) whose
  ``verification`` says it was not found in its cited source, or seen only in a secondary one. These
  come first: a pair that cannot be traced to its sources is the first thing to know about it.
- ``precision``: a number with more decimals than ``decimals``.
- ``out_of_scale``; ``fraction_as_percent`` (a percent value in (0, 1]: reads like a fraction).
- ``aggregate_mismatch``: the value is not the mean of its components (weighted by ``weights`` if given),
  within rounding of both. The message then says whether a standard RULER aggregation reproduces it:
  RULER's score over categories (the 13-task mean: niah 8, vt 1, aggregation 2, qa 2 tasks), the mean
  over lengths, or the length-weighted means RULER publishes (wAvg inc / dec: weights 1..n rising or
  falling with length). A value that is the task-weighted category mean is RULER's definition, not a
  finding.
- ``grim``: no k/N rounds to the value.
- ``possible_misattribution``: the value equals, within its precision, the value of another claim of a
  different model or source (same benchmark): one line naming both ids, under the less verified one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable

from reprogrid.catalogue import level_text as canon
from reprogrid.claims.registry import Claim, decimals_of, exact

RULER_CATEGORY_TASKS = {"niah": 8, "vt": 1, "aggregation": 2, "agg": 2, "qa": 2}
STATUS_RANK = {"seen": 3, "secondary": 2, "unverified": 1, "not_found": 0}


@dataclass(frozen=True)
class Finding:
    claim_id: str
    kind: str
    message: str
    file: str = ""

    def __str__(self) -> str:
        return f"{self.file}: {self.claim_id}: {self.kind}: {self.message}" if self.file else \
            f"{self.claim_id}: {self.kind}: {self.message}"


def _fmt_num(x: float | Fraction, d: int) -> str:
    return f"{float(x):.{d}f}"


def grim_possible(value: float | int, n: int, decimals: int, unit: int = 1) -> tuple[bool, list[int]]:
    """Can a mean of ``n`` items, each 0 or 1, shown as ``value`` (x ``unit``, ``decimals`` places) exist?

    True if some k in 0..n has k/n*unit within half a unit of the last decimal of ``value`` (both ends
    included, so either rounding convention passes). Exact rational arithmetic: no float rounding.
    Also returns the nearest k's (for the message).
    """
    v = exact(value)
    half = Fraction(1, 2 * 10 ** decimals)
    lo = (v - half) / unit * n
    hi = (v + half) / unit * n
    k_lo = max(0, math.ceil(lo))
    k_hi = min(n, math.floor(hi))
    target = v / unit * n
    near = sorted({min(n, max(0, math.floor(target))), min(n, max(0, math.ceil(target)))})
    return k_lo <= k_hi, near


def _half(d: int) -> Fraction:
    return Fraction(1, 2 * 10 ** d)


def weighted_mean(values: list, weights: list) -> Fraction:
    w = [Fraction(x).limit_denominator(10 ** 9) if isinstance(x, float) else Fraction(x) for x in weights]
    return sum((wi * exact(v) for wi, v in zip(w, values)), Fraction(0)) / sum(w, Fraction(0))


def standard_aggregations(c: Claim) -> dict[str, list]:
    """The standard RULER aggregations that apply to the claim's components: name -> weights."""
    keys = [canon(k).lower() for k in c.components]
    n = len(keys)
    out = {"plain mean": [1] * n}
    if all(k in RULER_CATEGORY_TASKS for k in keys):
        out["task-weighted category mean (niah 8, vt 1, aggregation 2, qa 2)"] = [RULER_CATEGORY_TASKS[k] for k in keys]
    lengths = []
    for k in keys:
        try:
            lengths.append(float(k))
        except ValueError:
            break
    if len(lengths) == n:
        rank = {x: i + 1 for i, x in enumerate(sorted(lengths))}
        out["wAvg (inc)"] = [rank[x] for x in lengths]
        out["wAvg (dec)"] = [n + 1 - rank[x] for x in lengths]
    return out


def _aggregate(c: Claim) -> list[tuple[str, str]]:
    vals = list(c.components.values())
    d_val = c.precision
    d_comps = [c.decimals if c.decimals is not None else decimals_of(v) for v in vals]
    d_comp, d_show = max(d_comps), max(d_val, max(d_comps)) + 2
    value = exact(c.value)

    def tolerance(weights) -> Fraction:
        return _half(d_val) + weighted_mean([_half(d) for d in d_comps], weights)

    declared = list(c.weights.values()) if c.weights else [1] * len(vals)
    mean = weighted_mean(vals, declared)
    tol = tolerance(declared)
    diff = abs(mean - value)
    if diff <= tol:
        return []
    over = f" over {c.aggregate_over}" if c.aggregate_over else ""
    if c.weights:
        what = f"the weighted mean of its {len(vals)} components{over} (weights {', '.join(map(str, declared))}): "
        total = f"{_fmt_num(mean, d_show)}"
    else:
        what = f"the mean of its {len(vals)} components{over}: "
        total = f"{_fmt_num(sum(map(exact, vals), Fraction(0)), d_comp)}/{len(vals)} = {_fmt_num(mean, d_show)}"
    msg = (f"value {c.value!r} is not {what}{total} (off by {_fmt_num(diff, d_show)}; rounding allows "
           f"{_fmt_num(tol, d_show)})")
    tried = {name: w for name, w in standard_aggregations(c).items() if w != declared}
    means = {name: weighted_mean(vals, w) for name, w in tried.items()}
    hits = [name for name, w in tried.items() if abs(means[name] - value) <= tolerance(w)]
    if any(h.startswith("task-weighted") for h in hits) and not c.weights:
        return []  # RULER's score over categories is by definition the task-weighted mean
    if hits:
        name = hits[0]
        return [("aggregate_mismatch", f"{msg}; it is RULER's {name} ({_fmt_num(means[name], d_show)}) within "
                                       "rounding: check which average the source reports")]
    shown = ", ".join(f"{name} {_fmt_num(m, d_show)}" for name, m in means.items())
    return [("aggregate_mismatch", f"{msg}; no standard RULER aggregation reproduces {c.value!r} from these "
                                   f"components" + (f" ({shown})" if shown else ""))]


def _numbers(c: Claim) -> list[tuple[str, str]]:
    out = []
    unit = c.unit
    numbers = [("value", c.value)] + [(f"component {k}", v) for k, v in (c.components or {}).items()]
    if c.decimals is not None:
        for what, x in numbers:
            if decimals_of(x) > c.decimals:
                out.append(("precision", f"{what} {x!r} has {decimals_of(x)} decimals but decimals: {c.decimals}"))
    for what, x in numbers:
        if x < 0 or x > unit:
            hint = f"; it reads as a percentage ({x}% = {x / 100:g})" if c.scale == "fraction" and 1 < x <= 100 else ""
            out.append(("out_of_scale", f"{what} {x!r} is outside the {c.scale} scale [0, {unit}]{hint}"))
    if c.scale == "percent" and 0 < c.value <= 1:
        out.append(("fraction_as_percent", f"value {c.value!r} is stated as percent but lies in (0, 1]: it reads as "
                                           f"a fraction ({c.value * 100:g}%?); check the source's scale"))
    return out


def _grim(c: Claim) -> list[tuple[str, str]]:
    if c.n_items is None:
        return []
    n = c.n_items * c.item_denominator
    d = c.precision
    ok, near = grim_possible(c.value, n, d, c.unit)
    if ok:
        return []
    items = f"{c.n_items} binary items" if c.item_denominator == 1 else \
        f"{c.n_items} items scored in steps of 1/{c.item_denominator}"
    inferred = "" if c.decimals is not None else " (precision read off the value)"
    near_txt = ", ".join(f"{k}/{n} = {_fmt_num(Fraction(k * c.unit, n), d + 2)}" for k in near)
    return [("grim", f"value {c.value!r} cannot be a mean of {items}: no k/{n} rounds to it at "
                     f"{d} decimals{inferred}; nearest {near_txt}")]


def _who(c: Claim) -> str:
    src = f"arXiv {c.source['arxiv']}" if c.source.get("arxiv") else c.source_key
    return f"{c.model_name or c.model}, {src}, {c.status}"


def value_matches(claims: list[Claim]) -> list[Finding]:
    """Claims whose values are equal within rounding but whose model or source differ (one per pair)."""
    out = []
    for j, b in enumerate(claims):
        for a in claims[:j]:
            if a.benchmark != b.benchmark or (a.model == b.model and a.source_key == b.source_key):
                continue
            if abs(exact(a.value) / a.unit - exact(b.value) / b.unit) > max(Fraction(a.tolerance), Fraction(b.tolerance)):
                continue
            suspect, other = (a, b) if STATUS_RANK[a.status] < STATUS_RANK[b.status] else (b, a)
            out.append(Finding(suspect.id, "possible_misattribution",
                               f"value {suspect.value!r} ({_who(suspect)}) equals {other.value!r} of {other.id} "
                               f"({_who(other)}) within rounding: one may be the other's number misattributed",
                               suspect.file))
    return out


def default_pair(claims: list[Claim]) -> tuple[Claim, Claim]:
    """The lowest and the highest claim (first of ties)."""
    return min(claims, key=lambda c: c.fraction), max(claims, key=lambda c: c.fraction)


def traceability(claims: list[Claim], pair: tuple[str, str] | None = None) -> list[Finding]:
    """The pair's claims that are not traceable to their cited source (explicit status only)."""
    by_id = {c.id: c for c in claims}
    if pair is not None:
        low, high = by_id[pair[0]], by_id[pair[1]]
    elif len(claims) > 1:
        low, high = default_pair(claims)
    else:
        return []
    out = []
    for role, c in (("low", low), ("high", high)):
        v = c.verification or {}
        if c.status == "not_found":
            msg = f"not found in its cited source ({c.label()}); looked for in: {v.get('where')}"
        elif c.status == "secondary":
            msg = f"seen only in a secondary source, not in {c.label()}: {v.get('where')}"
        else:
            continue
        out.append(Finding(c.id, "not_traceable", f"the pair's {role} claim ({c.value!r}) is {msg}", c.file))
    return out


def check_claims(claims: Iterable[Claim], pair: tuple[str, str] | None = None) -> list[Finding]:
    """Consistency checks that need no model; the pair's untraceable claims first, then claim order."""
    claims = list(claims)
    out = traceability(claims, pair)
    matches = value_matches(claims)
    for c in claims:
        kinds = _numbers(c) + (_aggregate(c) if c.components and c.aggregate == "mean" else []) + _grim(c)
        out += [Finding(c.id, kind, msg, c.file) for kind, msg in kinds]
        out += [f for f in matches if f.claim_id == c.id]
    return out
