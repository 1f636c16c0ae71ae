"""Published claims: a registry, consistency checks, mapping to grid cells and verdicts for the report.

Claims files (``configs/claims/*.yaml``) are mappings with a ``claims:`` list (and optional ``notes:``,
``description:``). A claim::

    - id: pbs_attn_qwen25_7b_1m_ruler        # unique over all files read together ([A-Za-z0-9._-])
      source: {paper: "...", arxiv: "2510.21270", table: "Table 1"}   # or one string
      model: qwen2.5-7b-instruct-1m             # the `model` factor's level (a slug)
      benchmark: ruler
      value: 95.7
      scale: percent                            # percent (0-100) or fraction (0-1)
      decimals: 1                               # optional: reported precision (else read off each number)
      n_items: 500                              # optional: binary items behind `value` (enables GRIM)
      item_denominator: 1                       # optional: item scores are multiples of 1/this (default 1)
      aggregate: mean                           # optional, with `components` (and `aggregate_over`)
      aggregate_over: context_length            # which factor the component keys are levels of
      components: {4096: 97.5, 8192: 97.1}      # level -> value, same scale as `value`
      protocol: {dtype: bfloat16}               # the level of each factor THE SOURCE STATES; unstated = absent
      notes: "..."
      stated: ["quotes or facts seen in the source"]

Protocol factors are the study's factor catalogue (``reprogrid.config``), minus ``model`` (the claim's own
field). Levels are checked against the catalogue's types and enums; ``attn_implementation`` and
``quantization`` accept any string because a source may name a method the pipeline does not implement.

``reprogrid claims check FILE...``: consistency checks that need no model, one line per finding
(``FILE: CLAIM_ID: KIND: message``); exit 1 if any finding, 0 if none, 2 if a file is invalid.
Kinds: ``aggregate_mismatch`` (mean of components vs the value, within rounding of both),
``out_of_scale``, ``fraction_as_percent`` (a percent value in (0, 1]: reads like a fraction),
``precision`` (a number with more decimals than ``decimals``), ``grim`` (no k/N rounds to the value).

``reprogrid claims map FILE... --cells CELLS --out DIR [--samples S] [--shares T] [--pair LOW,HIGH]``
writes ``DIR/claim_cells.csv`` (``map_claims_to_cells``) and ``DIR/verdicts.json`` (``verdicts``).
Values are kept on the fraction scale internally and in outputs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from reprogrid.catalogue import cell_text as format_cell
from reprogrid.catalogue import factor_names, load_schema
from reprogrid.catalogue import level_text as canon
from reprogrid.errors import UserError
from reprogrid.explain import explain
from reprogrid.io import load_yaml
from reprogrid.stats import item_bootstrap_means, percentile_interval

SCALES = ("percent", "fraction")
SCALE_MAX = {"percent": 100, "fraction": 1}
TOP_KEYS = ("claims", "description", "notes")
REQUIRED_KEYS = ("id", "source", "model", "benchmark", "value", "scale", "protocol")
OPTIONAL_KEYS = ("decimals", "n_items", "item_denominator", "aggregate", "aggregate_over", "components",
                 "notes", "stated")
SOURCE_KEYS = ("paper", "arxiv", "table", "section", "url", "via", "year")
AGGREGATES = ("mean",)
OPEN_VOCABULARY = frozenset({"attn_implementation", "quantization"})
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
ARXIV_RE = re.compile(r"^\d{4}\.\d{4,5}(v\d+)?$")
MAX_DECIMALS = 10


# ---------------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class Claim:
    id: str
    source: dict
    model: str
    benchmark: str
    value: float
    scale: str
    protocol: dict
    decimals: int | None = None
    n_items: int | None = None
    item_denominator: int = 1
    aggregate: str | None = None
    aggregate_over: str | None = None
    components: dict | None = None
    notes: str | None = None
    stated: tuple = ()
    file: str = ""
    index: int = 0

    @property
    def unit(self) -> int:
        return SCALE_MAX[self.scale]

    @property
    def fraction(self) -> float:
        """The value on the fraction (0-1) scale (95.7 percent -> 0.957, exactly as written)."""
        return float(_exact(self.value) / self.unit)

    @property
    def precision(self) -> int:
        """Decimals of the value: ``decimals`` if given, else as many as the value shows."""
        return self.decimals if self.decimals is not None else decimals_of(self.value)

    @property
    def tolerance(self) -> float:
        """Half a unit of the last reported decimal, on the fraction scale."""
        return 0.5 * 10 ** (-self.precision) / self.unit

    def where(self, key: str | None = None) -> str:
        base = f"{self.file}: claims[{self.index}]"
        return f"{base}.{key}" if key else base

    def label(self) -> str:
        src = self.source
        return src.get("paper") or src.get("table") or src.get("arxiv") or src.get("url") or self.id


def decimals_of(x: float | int) -> int:
    """Decimals shown by the shortest text of ``x`` (YAML drops trailing zeros: 95.70 -> 1)."""
    if isinstance(x, bool) or isinstance(x, int):
        return 0
    exp = Decimal(repr(float(x))).normalize().as_tuple().exponent
    return max(0, -int(exp))


def _exact(x: float | int) -> Fraction:
    """The decimal number as written (repr), exactly."""
    return Fraction(Decimal(repr(x))) if isinstance(x, float) else Fraction(int(x))


def _factor_specs() -> dict[str, dict]:
    """Factor name -> JSON-schema of one level, from the study schema (names only if unreadable)."""
    props = load_schema("config")["properties"]["factors"]["properties"]
    return {name: dict(spec.get("items", {})) for name, spec in props.items()}


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "mapping"
    return type(v).__name__


def _check_level(name: str, v: Any, spec: dict, where: str) -> None:
    if v is None:
        raise UserError("null is not a level; leave the factor out if the source does not state it", field=where)
    if isinstance(v, (list, dict)):
        raise UserError(f"expected one level, got a {_type_name(v)}", field=where)
    if "enum" in spec:
        if name in OPEN_VOCABULARY:
            if not isinstance(v, str):
                raise UserError(f"expected a string, got {_type_name(v)} {v!r}", field=where)
            return
        ok = any(v == e and type(v) is type(e) for e in spec["enum"])
        if not ok:
            raise UserError(f"expected one of {', '.join(map(repr, spec['enum']))}, got {v!r}", field=where)
        return
    t = spec.get("type")
    if t == "integer":
        if isinstance(v, bool) or not isinstance(v, int):
            raise UserError(f"expected an integer, got {_type_name(v)} {v!r}", field=where)
    elif t == "number":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise UserError(f"expected a number, got {_type_name(v)} {v!r}", field=where)
    elif t == "boolean":
        if not isinstance(v, bool):
            raise UserError(f"expected true or false, got {_type_name(v)} {v!r}", field=where)
    elif t == "string":
        if not isinstance(v, str):
            raise UserError(f"expected a string, got {_type_name(v)} {v!r}", field=where)
    if t in ("integer", "number"):
        if "minimum" in spec and v < spec["minimum"]:
            raise UserError(f"{v!r} is below the minimum {spec['minimum']}", field=where)
        if "maximum" in spec and v > spec["maximum"]:
            raise UserError(f"{v!r} is above the maximum {spec['maximum']}", field=where)
        if "exclusiveMinimum" in spec and v <= spec["exclusiveMinimum"]:
            raise UserError(f"{v!r} must be above {spec['exclusiveMinimum']}", field=where)


def _number(v: Any, where: str) -> float | int:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        hint = " (remove the quotes)" if isinstance(v, str) and _looks_numeric(v) else ""
        raise UserError(f"expected a number, got {_type_name(v)} {v!r}{hint}", field=where)
    if isinstance(v, float) and not math.isfinite(v):
        raise UserError(f"expected a finite number, got {v!r}", field=where)
    return v


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _int(v: Any, where: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise UserError(f"expected an integer >= {minimum}, got {_type_name(v)} {v!r}", field=where)
    if v < minimum or (maximum is not None and v > maximum):
        rng = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise UserError(f"expected an integer {rng}, got {v}", field=where)
    return v


def _string(v: Any, where: str, pattern: re.Pattern | None = None, what: str = "") -> str:
    if not isinstance(v, str) or not v.strip():
        hint = " in quotes (YAML read it as a number)" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
        raise UserError(f"expected a non-empty string{hint}, got {_type_name(v)} {v!r}", field=where)
    if pattern is not None and not pattern.match(v):
        raise UserError(f"{v!r} is not {what or 'valid'}", field=where)
    return v


def _read_yaml(path: Path) -> Any:
    return load_yaml(path)


def _parse_claim(raw: Any, path: str, i: int, specs: dict[str, dict]) -> Claim:
    base = f"{path}: claims[{i}]"
    if not isinstance(raw, dict):
        raise UserError(f"expected a mapping (one claim), got {_type_name(raw)}", field=base)
    unknown = [k for k in raw if k not in REQUIRED_KEYS + OPTIONAL_KEYS]
    if unknown:
        raise UserError(f"unknown key; allowed keys: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)}",
                        field=f"{base}.{unknown[0]}")
    for k in REQUIRED_KEYS:
        if k not in raw:
            hint = " (use {} if the source states no factor)" if k == "protocol" else ""
            raise UserError(f"required{hint}", field=f"{base}.{k}")
    cid = _string(raw["id"], f"{base}.id", ID_RE, "an id (letters, digits, '.', '_', '-')")

    src = raw["source"]
    if isinstance(src, str):
        if not src.strip():
            raise UserError("expected a non-empty string or a mapping", field=f"{base}.source")
        source = {"paper": src}
    elif isinstance(src, dict):
        bad = [k for k in src if k not in SOURCE_KEYS]
        if bad:
            raise UserError(f"unknown key; allowed keys: {', '.join(SOURCE_KEYS)}", field=f"{base}.source.{bad[0]}")
        if not any(k in src for k in ("paper", "arxiv", "url", "table")):
            raise UserError("name the source: at least one of paper, arxiv, url, table", field=f"{base}.source")
        for k, v in src.items():
            if k == "year":
                _int(v, f"{base}.source.year", 1900, 2100)
            elif k == "arxiv":
                _string(v, f"{base}.source.arxiv", ARXIV_RE, "an arXiv id such as '2510.21270'")
            else:
                _string(v, f"{base}.source.{k}")
        source = dict(src)
    else:
        raise UserError(f"expected a string or a mapping (paper, arxiv, table, ...), got {_type_name(src)}",
                        field=f"{base}.source")

    model = _string(raw["model"], f"{base}.model", SLUG_RE, "a model slug (lowercase letters, digits, '.', '_', '-')")
    benchmark = _string(raw["benchmark"], f"{base}.benchmark")
    value = _number(raw["value"], f"{base}.value")
    scale = raw["scale"]
    if scale not in SCALES:
        raise UserError(f"expected 'percent' or 'fraction', got {scale!r}", field=f"{base}.scale")
    decimals = raw.get("decimals")
    if decimals is not None:
        _int(decimals, f"{base}.decimals", 0, MAX_DECIMALS)
    n_items = raw.get("n_items")
    if n_items is not None:
        _int(n_items, f"{base}.n_items", 1)
    item_den = raw.get("item_denominator", 1)
    _int(item_den, f"{base}.item_denominator", 1)

    aggregate = raw.get("aggregate")
    agg_over = raw.get("aggregate_over")
    comps_raw = raw.get("components")
    if aggregate is not None and aggregate not in AGGREGATES:
        raise UserError(f"expected one of {', '.join(map(repr, AGGREGATES))}, got {aggregate!r}",
                        field=f"{base}.aggregate")
    if agg_over is not None:
        _string(agg_over, f"{base}.aggregate_over", NAME_RE, "a factor name")
    components = None
    if comps_raw is not None:
        if not isinstance(comps_raw, dict):
            raise UserError(f"expected a mapping of level -> value, got {_type_name(comps_raw)}",
                            field=f"{base}.components")
        if len(comps_raw) < 2:
            raise UserError("expected at least 2 components", field=f"{base}.components")
        if aggregate is None:
            raise UserError("components need `aggregate: mean`", field=f"{base}.components")
        seen: dict[str, Any] = {}
        components = {}
        for key, v in comps_raw.items():
            where = f"{base}.components[{key!r}]" if isinstance(key, str) else f"{base}.components[{key}]"
            if agg_over in specs:
                _check_level(agg_over, key, specs[agg_over], where)
            c = canon(key)
            if c in seen:
                raise UserError(f"level given twice ({seen[c]!r} and {key!r})", field=where)
            seen[c] = key
            components[key] = _number(v, where)
    elif aggregate is not None:
        raise UserError("an aggregate needs its `components` (a mapping of level -> value)",
                        field=f"{base}.components")
    if agg_over is not None and components is None:
        raise UserError("`aggregate_over` needs `aggregate` and `components`", field=f"{base}.aggregate_over")

    proto = raw["protocol"]
    if proto is None:
        proto = {}
    if not isinstance(proto, dict):
        raise UserError(f"expected a mapping of factor -> stated level, got {_type_name(proto)}",
                        field=f"{base}.protocol")
    for name, level in proto.items():
        where = f"{base}.protocol.{name}"
        if name == "model":
            raise UserError("the model is the claim's own `model` field; remove it from the protocol", field=where)
        if name not in specs:
            known = ", ".join(n for n in specs if n != "model")
            raise UserError(f"unknown factor {name!r}; known factors: {known}", field=where)
        _check_level(name, level, specs[name], where)
    if agg_over is not None and agg_over in proto:
        raise UserError(f"{agg_over!r} is aggregated over (its levels are the component keys); "
                        f"remove it from the protocol", field=f"{base}.protocol.{agg_over}")

    notes = raw.get("notes")
    if notes is not None:
        _string(notes, f"{base}.notes")
    stated = raw.get("stated", [])
    if stated is None:
        stated = []
    if not isinstance(stated, list):
        raise UserError(f"expected a list of strings, got {_type_name(stated)}", field=f"{base}.stated")
    for j, s in enumerate(stated):
        _string(s, f"{base}.stated[{j}]")

    return Claim(id=cid, source=source, model=model, benchmark=benchmark, value=value, scale=scale,
                 protocol=dict(proto), decimals=decimals, n_items=n_items, item_denominator=item_den,
                 aggregate=aggregate, aggregate_over=agg_over, components=components, notes=notes,
                 stated=tuple(stated), file=path, index=i)


def load_claims(paths: Iterable[str | Path]) -> list[Claim]:
    """Read and validate claims files; raise UserError (naming file and field) on the first problem."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("no claims file given", field="FILE")
    specs = _factor_specs()
    claims: list[Claim] = []
    first: dict[str, Claim] = {}
    for path in paths:
        raw = _read_yaml(path)
        p = str(path)
        if raw is None:
            raise UserError("the file is empty; expected a mapping with a 'claims:' list", field=p)
        if not isinstance(raw, dict):
            raise UserError(f"expected a mapping with a 'claims:' list, got {_type_name(raw)}", field=p)
        for k in raw:
            if k not in TOP_KEYS:
                raise UserError(f"unknown top-level key; allowed keys: {', '.join(TOP_KEYS)}", field=f"{p}: {k}")
        if "claims" not in raw:
            raise UserError("required: a list of claims", field=f"{p}: claims")
        items = raw["claims"]
        if not isinstance(items, list):
            raise UserError(f"expected a list of claims, got {_type_name(items)}", field=f"{p}: claims")
        if not items:
            raise UserError("the list is empty; expected at least one claim", field=f"{p}: claims")
        for k in ("description", "notes"):
            if k in raw and raw[k] is not None:
                _string(raw[k], f"{p}: {k}")
        for i, item in enumerate(items):
            claim = _parse_claim(item, p, i, specs)
            if claim.id in first:
                other = first[claim.id]
                raise UserError(f"duplicate id {claim.id!r} (first at {other.where()})", field=claim.where("id"))
            first[claim.id] = claim
            claims.append(claim)
    return claims


# ---------------------------------------------------------------------------------------------------
# consistency checks


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
    v = _exact(value)
    half = Fraction(1, 2 * 10 ** decimals)
    lo = (v - half) / unit * n
    hi = (v + half) / unit * n
    k_lo = max(0, math.ceil(lo))
    k_hi = min(n, math.floor(hi))
    target = v / unit * n
    near = sorted({min(n, max(0, math.floor(target))), min(n, max(0, math.ceil(target)))})
    return k_lo <= k_hi, near


def check_claims(claims: Iterable[Claim]) -> list[Finding]:
    """Consistency checks that need no model; one Finding per problem, in claim order."""
    out: list[Finding] = []
    for c in claims:
        def add(kind: str, msg: str) -> None:
            out.append(Finding(c.id, kind, msg, c.file))

        unit = c.unit
        numbers = [("value", c.value)] + [(f"component {k}", v) for k, v in (c.components or {}).items()]
        # precision
        if c.decimals is not None:
            for what, x in numbers:
                if decimals_of(x) > c.decimals:
                    add("precision", f"{what} {x!r} has {decimals_of(x)} decimals but decimals: {c.decimals}")
        # scale
        for what, x in numbers:
            if x < 0 or x > unit:
                hint = ""
                if c.scale == "fraction" and 1 < x <= 100:
                    hint = f"; it reads as a percentage ({x}% = {x / 100:g})"
                add("out_of_scale", f"{what} {x!r} is outside the {c.scale} scale [0, {unit}]{hint}")
        if c.scale == "percent" and 0 < c.value <= 1:
            add("fraction_as_percent", f"value {c.value!r} is stated as percent but lies in (0, 1]: it reads as a "
                                       f"fraction ({c.value * 100:g}%?); check the source's scale")
        # aggregate
        if c.components and c.aggregate == "mean":
            vals = list(c.components.values())
            exact = [_exact(v) for v in vals]
            mean = sum(exact, Fraction(0)) / len(exact)
            # the value is off by at most half its last decimal, the mean of the components by at most the
            # mean of their half-units (decimals as stated, else as each number shows)
            d_val = c.precision
            d_comps = [c.decimals if c.decimals is not None else decimals_of(v) for v in vals]
            tol = Fraction(1, 2 * 10 ** d_val) + sum((Fraction(1, 2 * 10 ** d) for d in d_comps), Fraction(0)) / len(vals)
            d_comp = max(d_comps)
            diff = abs(mean - _exact(c.value))
            if diff > tol:
                over = f" over {c.aggregate_over}" if c.aggregate_over else ""
                total = sum(exact, Fraction(0))
                d_show = max(d_val, d_comp) + 2
                add("aggregate_mismatch",
                    f"value {c.value!r} is not the mean of its {len(vals)} components{over}: "
                    f"{_fmt_num(total, d_comp)}/{len(vals)} = {_fmt_num(mean, d_show)} "
                    f"(off by {_fmt_num(diff, d_show)}; rounding allows {_fmt_num(tol, d_show)})")
        # GRIM
        if c.n_items is not None:
            n = c.n_items * c.item_denominator
            d = c.precision
            ok, near = grim_possible(c.value, n, d, unit)
            if not ok:
                items = f"{c.n_items} binary items" if c.item_denominator == 1 else \
                    f"{c.n_items} items scored in steps of 1/{c.item_denominator}"
                inferred = "" if c.decimals is not None else " (precision read off the value)"
                near_txt = ", ".join(f"{k}/{n} = {_fmt_num(Fraction(k * unit, n), d + 2)}" for k in near)
                add("grim", f"value {c.value!r} cannot be a mean of {items}: no k/{n} rounds to it at "
                            f"{d} decimals{inferred}; nearest {near_txt}")
    return out


# ---------------------------------------------------------------------------------------------------
# mapping claims to grid cells


def grid_factors(cells: pd.DataFrame, factors: list[str] | None = None) -> list[str]:
    """The factor columns of a cells table: ``factors`` if given, else the catalogue's names present."""
    if factors is not None:
        missing = [f for f in factors if f not in cells.columns]
        if missing:
            raise UserError(f"not columns of the cells table: {', '.join(missing)}", field="--factors")
        return list(factors)
    return [f for f in factor_names() if f in cells.columns]


def fraction_scores(df: pd.DataFrame, col: str = "score") -> pd.Series:
    """``col`` on the fraction scale: rows whose ``scale`` factor says percent are divided by 100."""
    s = pd.to_numeric(df[col], errors="coerce").astype(float)
    if "scale" in df.columns:
        s = s.where(df["scale"].astype(str) != "percent", s / 100.0)
    return s


def _check_cells(cells: pd.DataFrame) -> None:
    if not isinstance(cells, pd.DataFrame):
        raise UserError("expected a table (DataFrame)", field="cells")
    for col in ("cell_id", "score"):
        if col not in cells.columns:
            raise UserError(f"the cells table has no {col!r} column", field="cells")
    if "model" not in cells.columns:
        raise UserError("the cells table has no 'model' column", field="cells")


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


def claim_profiles(claim: Claim, cells: pd.DataFrame, factors: list[str], *,
                   model: str | None = None, value_from: Claim | None = None) -> Profiles:
    """Select the cells matching ``claim``'s model and stated protocol; group by the open factors.

    ``model`` overrides the claim's model (for "the other model under this claim's conditions").
    For an aggregate claim over a grid factor, a profile is the mean over the component levels.
    """
    model = model or claim.model
    stated = {"model": model, **claim.protocol}
    if "scale" in factors and "scale" not in stated:
        stated["scale"] = claim.scale  # the scale a claim is reported on is a stated level
    fkeys = {f: cells[f].map(canon) for f in factors}
    k = pd.DataFrame(fkeys, index=cells.index)
    ok = cells["status"].astype(str) == "ok" if "status" in cells.columns else pd.Series(True, index=cells.index)
    missing: list[str] = []
    unverified = [f"{f}={format_level(v)}" for f, v in claim.protocol.items() if f not in factors]

    agg_f = claim.aggregate_over if (claim.components and claim.aggregate_over in factors) else None
    sel = pd.Series(True, index=cells.index)
    for f, v in stated.items():
        if f not in factors:
            continue
        want = canon(v)
        if not (k[f] == want).any():
            levels = sorted(k[f].unique(), key=_level_sort)
            missing.append(f"{f}={format_level(v)} is not in the grid (levels: {', '.join(levels)})")
        sel &= k[f] == want
    comp_levels: list[str] = []
    if agg_f:
        comp_levels = [canon(x) for x in claim.components]
        for lvl in comp_levels:
            if not (k[agg_f] == lvl).any():
                missing.append(f"{agg_f}={lvl} (a component) is not in the grid")
        sel &= k[agg_f].isin(comp_levels)
    unknown = [f for f in factors if f not in stated and f != agg_f]
    n_failed = int((sel & ~ok).sum())
    sel &= ok
    sub = cells[sel]
    ks = k[sel]
    score = fraction_scores(sub)
    n_it = pd.to_numeric(sub["n_items"], errors="coerce") if "n_items" in sub.columns else pd.Series(np.nan, index=sub.index)
    open_levels = {f: sorted(ks[f].unique(), key=_level_sort) for f in unknown}
    rows = []
    if len(sub):
        gkeys = pd.Series(list(map(tuple, ks[unknown].to_numpy().tolist())) if unknown else [()] * len(ks),
                          index=ks.index, dtype=object)
        groups: dict[tuple, list] = {}
        for idx, gk in gkeys.items():
            groups.setdefault(gk, []).append(idx)
        for gk in sorted(groups, key=lambda t: tuple(_level_sort(x) for x in t)):
            idx = groups[gk]
            row = dict(zip(unknown, gk))
            if agg_f:
                per = score.loc[idx].groupby(ks.loc[idx, agg_f]).mean()
                lacking = [lvl for lvl in comp_levels if lvl not in per.index]
                if lacking:
                    desc = ", ".join(f"{f}={v}" for f, v in row.items()) or "(all)"
                    missing.append(f"{desc}: no ok cell at {agg_f}={', '.join(lacking)}")
                    continue
                row["score"] = float(per.loc[comp_levels].mean())
            else:
                row["score"] = float(score.loc[idx].mean())
            row["cell_ids"] = tuple(sub.loc[idx, "cell_id"].astype(str))
            row["n_items"] = float(n_it.loc[idx].sum()) if n_it.loc[idx].notna().all() else np.nan
            rows.append(row)
    elif not missing:
        desc = ", ".join(f"{f}={format_level(v)}" for f, v in stated.items() if f in factors)
        reason = f" ({n_failed} failed)" if n_failed else ""
        missing.append(f"no ok cell with {desc}{reason}")
    table = pd.DataFrame(rows, columns=[*unknown, "score", "cell_ids", "n_items"])
    return Profiles(claim, table, unknown, open_levels, missing, unverified, n_failed, bool(agg_f))


def _level_sort(s: str):
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


def format_level(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def map_claims_to_cells(claims: list[Claim], cells_df: pd.DataFrame, factor_names: list[str] | None = None
                        ) -> pd.DataFrame:
    """One row per claim: the grid's range over the levels the source left open.

    Columns: claim_id, model, benchmark, claim_value (fraction), tolerance (fraction: half a unit of the
    last reported decimal), n_cells, n_profiles, n_failed, unknown_factors ("a;b"), open_levels
    ("f=1|2;g=x|y", factors with several levels only), grid_min, grid_mean, grid_max, nearest (the grid
    reading closest to the claim), in_range (claim within [min - tol, max + tol]), aggregated,
    missing ("; "-joined reasons), unverified (stated factors the grid does not record), cell_ids.
    """
    _check_cells(cells_df)
    factors = grid_factors(cells_df, factor_names)
    rows = []
    for c in claims:
        p = claim_profiles(c, cells_df, factors)
        t = p.table
        scores = t["score"].to_numpy(float)
        cell_ids = sorted({cid for ids in t["cell_ids"] for cid in ids})
        has = len(scores) > 0
        nearest = float(scores[np.argmin(np.abs(scores - c.fraction))]) if has else np.nan
        rows.append({
            "claim_id": c.id, "model": c.model, "benchmark": c.benchmark,
            "claim_value": c.fraction, "tolerance": c.tolerance,
            "n_cells": len(cell_ids), "n_profiles": len(t), "n_failed": p.n_failed,
            "unknown_factors": ";".join(p.unknown),
            "open_levels": ";".join(f"{f}={'|'.join(v)}" for f, v in p.open_levels.items() if len(v) > 1),
            "grid_min": float(scores.min()) if has else np.nan,
            "grid_mean": float(scores.mean()) if has else np.nan,
            "grid_max": float(scores.max()) if has else np.nan,
            "nearest": nearest,
            "in_range": bool(has and scores.min() - c.tolerance <= c.fraction <= scores.max() + c.tolerance),
            "aggregated": p.aggregated,
            "missing": "; ".join(p.missing), "unverified": ";".join(p.unverified),
            "cell_ids": ";".join(cell_ids),
        })
    return pd.DataFrame(rows, columns=["claim_id", "model", "benchmark", "claim_value", "tolerance", "n_cells",
                                       "n_profiles", "n_failed", "unknown_factors", "open_levels", "grid_min",
                                       "grid_mean", "grid_max", "nearest", "in_range", "aggregated", "missing",
                                       "unverified", "cell_ids"])


# ---------------------------------------------------------------------------------------------------
# intervals for profiles


class _Intervals:
    """Per-cell bootstrap replicates (from the samples table) or a normal approximation (cells only)."""

    def __init__(self, cells: pd.DataFrame, samples: pd.DataFrame | None, bootstrap: int, seed: int,
                 level: float):
        self.cells = cells
        self.samples = samples
        self.bootstrap = bootstrap
        self.seed = seed
        self.level = level
        if samples is not None:
            for col in ("cell_id", "item_id", "score"):
                if col not in samples.columns:
                    raise UserError(f"the samples table has no {col!r} column", field="samples")
            s = samples.assign(_score=fraction_scores(samples))
            s = s[s["_score"].notna()]
            key = (s["task"].astype(str) + "\x1f" if "task" in s.columns else "") + s["item_id"].astype(str)
            self._s = s.assign(_item=key, _cell=s["cell_id"].astype(str))
            self.method = f"bootstrap over items ({bootstrap} replicates, seed {seed}, percentile {level:.0%})"
        else:
            self.method = "normal approximation, variance bound p(1-p)/n per cell (no samples table)"
        self._score = dict(zip(cells["cell_id"].astype(str), fraction_scores(cells)))
        self._n = dict(zip(cells["cell_id"].astype(str),
                           pd.to_numeric(cells["n_items"], errors="coerce") if "n_items" in cells.columns
                           else [np.nan] * len(cells)))

    def profile_intervals(self, table: pd.DataFrame) -> list[tuple[float, float] | None]:
        """Interval of each profile's score (a profile's cells are averaged with equal weights)."""
        if not len(table):
            return []
        if self.samples is not None and self.bootstrap > 0:
            ids = sorted({c for t in table["cell_ids"] for c in t})
            s = self._s[self._s["_cell"].isin(ids)]
            if not len(s):
                return [None] * len(table)
            mat = s.pivot_table(index="_cell", columns="_item", values="_score", aggfunc="mean")
            reps = item_bootstrap_means(mat.to_numpy(float), self.bootstrap, self.seed)
            pos = {c: i for i, c in enumerate(mat.index)}
            out = []
            for t in table["cell_ids"]:
                cols = [pos[c] for c in t if c in pos]
                if len(cols) != len(t):
                    out.append(None)
                    continue
                lo, hi = percentile_interval(reps[:, cols].mean(axis=1), self.level)
                out.append((float(lo), float(hi)))
            return out
        z = _z(self.level)
        out = []
        for t, score in zip(table["cell_ids"], table["score"]):
            var = 0.0
            for c in t:
                p, n = self._score.get(c, np.nan), self._n.get(c, np.nan)
                if not (n and n > 0) or np.isnan(p):
                    var = np.nan
                    break
                p = min(max(p, 0.0), 1.0)
                var += p * (1 - p) / n
            if np.isnan(var):
                out.append(None)
                continue
            se = math.sqrt(var) / len(t)
            out.append((max(0.0, score - z * se), min(1.0, score + z * se)))
        return out


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def _f(x: Any) -> Any:
    if x is None:
        return None
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _readings(p: Profiles, iv: _Intervals, target: float, tol: float) -> list[dict]:
    """Profiles as dicts sorted by distance to ``target``, each with its interval and consistency."""
    t = p.table
    cis = iv.profile_intervals(t)
    out = []
    for (_, row), ci in zip(t.iterrows(), cis):
        score = float(row["score"])
        lo, hi = ci if ci is not None else (score, score)
        out.append({
            "levels": {f: row[f] for f in p.unknown},
            "score": score, "ci": [lo, hi] if ci is not None else None,
            "distance": score - target,
            "consistent": bool(lo - tol <= target <= hi + tol),
            "cell_ids": list(row["cell_ids"]),
        })
    out.sort(key=lambda r: (abs(r["distance"]), r["score"]))
    return out


def _claim_brief(c: Claim) -> dict:
    return {"id": c.id, "source": c.source, "model": c.model, "value": c.fraction, "reported": c.value,
            "scale": c.scale, "tolerance": c.tolerance, "protocol": c.protocol,
            "aggregate": ({"kind": c.aggregate, "over": c.aggregate_over,
                           "levels": [format_level(x) for x in c.components]} if c.components else None)}


def _explanation(c: Claim, cells: pd.DataFrame, factors: list[str], iv: _Intervals) -> tuple[dict, Profiles, list]:
    p = claim_profiles(c, cells, factors)
    reads = _readings(p, iv, c.fraction, c.tolerance)
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
    return ({
        "claim": _claim_brief(c), "status": status, "summary": summary,
        "unknown_factors": p.unknown,
        "open_levels": p.open_levels, "n_readings": len(reads), "n_consistent": n_cons,
        "best": reads[0] if reads else None, "alternatives": reads[1:4],
        "missing": p.missing, "unverified": p.unverified, "n_failed": p.n_failed,
    }, p, reads)


def _levels_text(levels: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in levels.items()) or "the single matching cell"


def _top_factor(shares: pd.DataFrame | None) -> dict:
    if shares is None:
        return {"available": False, "reason": "no variance shares given (reprogrid attribute)"}
    need = {"effect", "shapley", "ci_low", "ci_high"}
    if not need <= set(shares.columns):
        raise UserError(f"variance shares need columns {', '.join(sorted(need))}; got {', '.join(map(str, shares.columns))}",
                        field="shares")
    t = shares[~shares["effect"].astype(str).str.lower().isin({"residual", "error", "total", "noise"})]
    t = t.assign(shapley=pd.to_numeric(t["shapley"], errors="coerce")).dropna(subset=["shapley"])
    if not len(t):
        return {"available": False, "reason": "the variance shares table has no effect rows"}
    t = t.sort_values("shapley", ascending=False, kind="stable")
    top = t.iloc[0]
    res = {"available": True, "effect": str(top["effect"]), "shapley": _f(float(top["shapley"])),
           "ci": [_f(pd.to_numeric(top["ci_low"], errors="coerce")), _f(pd.to_numeric(top["ci_high"], errors="coerce"))]}
    if len(t) > 1:
        second = t.iloc[1]
        s_hi = _f(pd.to_numeric(second["ci_high"], errors="coerce"))
        res["runner_up"] = {"effect": str(second["effect"]), "shapley": _f(float(second["shapley"])),
                            "ci": [_f(pd.to_numeric(second["ci_low"], errors="coerce")), s_hi]}
        lo = res["ci"][0]
        res["separated"] = bool(lo is not None and s_hi is not None and lo > s_hi)
    return res


def _pairwise(low: Claim, high: Claim, lo_reads: list, hi_reads: list, lo_p: Profiles, hi_p: Profiles,
              cells: pd.DataFrame, samples: pd.DataFrame | None, factors: list[str], bootstrap: int,
              seed: int, level: float) -> dict:
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

    def levels(reads, claim) -> dict:
        cid = reads[0]["cell_ids"][0]
        row = cell_of.loc[cid]
        return {f: canon(row[f]) for f in factors if f != agg}

    lo_lv, hi_lv = levels(lo_reads, low), levels(hi_reads, high)
    if samples is not None:
        df = samples.assign(_score=fraction_scores(samples))
        item = "item_id"
    else:
        df = cells.assign(_score=fraction_scores(cells))
        item = None
    if agg:
        keep = {canon(x) for x in low.components}
        df = df[df[agg].map(canon).isin(keep)]
    fac = [f for f in factors if f in df.columns]
    res = explain(df, "_score", lo_lv, hi_lv, item=item, bootstrap=bootstrap if item else 0, seed=seed,
                  factors=fac, level=level)
    if res.missing_cells:
        return {"available": False, "reason": "cells on the path are missing",
                "missing_cells": [format_cell(c) for c in res.missing_cells]}
    summ = res.summary()
    contrib = sorted(summ["contributions"], key=lambda r: -abs(r["contribution"] or 0))
    return {"available": True, "low_levels": lo_lv, "high_levels": hi_lv, "low_value": summ["low_value"],
            "high_value": summ["high_value"], "gap": summ["gap"], "gap_ci": summ["gap_ci"],
            "contributions": contrib, "largest": contrib[0]["factor"] if contrib else None,
            "averaged_over": summ["averaged_over"]}


def verdicts(claims: list[Claim], cells_df: pd.DataFrame, samples_df: pd.DataFrame | None = None,
             factor_names: list[str] | None = None, pair: tuple[str, str] | None = None,
             variance_shares: pd.DataFrame | None = None, bootstrap: int = 1000, seed: int = 0,
             level: float = 0.95) -> dict:
    """The report's answers for a pair of conflicting claims (JSON-serialisable, fraction scale).

    - ``most_explanatory_factor``: the effect with the largest Shapley share of the grid's variance
      (from ``variance_shares``, columns effect, shapley, ci_low, ci_high), with its interval and whether
      it is separated from the runner-up.
    - ``pairwise``: the exact Shapley split of the gap between the best grid readings of the two claims.
    - ``explanations``: for every claim, the grid reading consistent with its stated protocol whose score
      is closest to the claim (levels of the factors the source left open, score, interval, distance).
    - ``reproducibility``: the high claim's model under the low claim's stated conditions (open factors
      give a range; each reading has an item-bootstrap interval), compared with the high claim's value.
    ``pair`` = (low id, high id); default: the lowest and the highest claim value.
    """
    claims = list(claims)
    if not claims:
        raise UserError("no claims", field="claims")
    _check_cells(cells_df)
    factors = grid_factors(cells_df, factor_names)
    by_id = {c.id: c for c in claims}
    if pair is None:
        low = min(claims, key=lambda c: c.fraction)
        high = max(claims, key=lambda c: c.fraction)
    else:
        for cid in pair:
            if cid not in by_id:
                raise UserError(f"unknown claim id {cid!r}; ids: {', '.join(by_id)}", field="--pair")
        low, high = by_id[pair[0]], by_id[pair[1]]
    iv = _Intervals(cells_df, samples_df, bootstrap, seed, level)

    explanations, profiles, readings = {}, {}, {}
    for c in claims:
        explanations[c.id], profiles[c.id], readings[c.id] = _explanation(c, cells_df, factors, iv)

    # reproducibility: high's model, low's stated conditions (and low's aggregation)
    cond = claim_profiles(low, cells_df, factors, model=high.model)
    reads = _readings(cond, iv, high.fraction, high.tolerance)
    n_cons = sum(r["consistent"] for r in reads)
    if not reads:
        status = "undetermined"
        text = f"no grid reading of {high.model} under the conditions of {low.id}: {'; '.join(cond.missing)}"
    elif n_cons == len(reads):
        status = "reproduces"
        text = f"{high.model} reaches {high.fraction:.4f} under every reading of {low.id}'s stated conditions"
    elif n_cons == 0:
        status = "does_not_reproduce"
        text = (f"{high.model} under {low.id}'s stated conditions scores {min(r['score'] for r in reads):.4f}"
                f"-{max(r['score'] for r in reads):.4f}, not {high.fraction:.4f}")
    else:
        status = "depends_on_unknowns"
        text = (f"{high.model} reaches {high.fraction:.4f} in {n_cons} of {len(reads)} readings of {low.id}'s "
                f"stated conditions: it depends on the factors {low.id} leaves open")
    lows = [r["ci"][0] if r["ci"] else r["score"] for r in reads]
    highs = [r["ci"][1] if r["ci"] else r["score"] for r in reads]
    repro = {
        "model": high.model, "conditions_of": low.id, "conditions": low.protocol,
        "aggregate": _claim_brief(low)["aggregate"], "claimed": high.fraction, "tolerance": high.tolerance,
        "status": status, "summary": text, "unknown_factors": cond.unknown, "open_levels": cond.open_levels,
        "range": [min(r["score"] for r in reads), max(r["score"] for r in reads)] if reads else None,
        "interval": [min(lows), max(highs)] if reads else None,
        "readings": reads, "missing": cond.missing, "unverified": cond.unverified,
    }

    pairwise = _pairwise(low, high, readings[low.id], readings[high.id], profiles[low.id], profiles[high.id],
                         cells_df, samples_df, factors, bootstrap, seed, level)
    out = {
        "scale": "fraction",
        "interval_method": iv.method,
        "factors": factors,
        "pair": {"low": _claim_brief(low), "high": _claim_brief(high), "spread": high.fraction - low.fraction},
        "most_explanatory_factor": _top_factor(variance_shares),
        "pairwise": pairwise,
        "explanations": [explanations[c.id] for c in claims],
        "reproducibility": repro,
        "findings": [{"claim_id": f.claim_id, "kind": f.kind, "message": f.message} for f in check_claims(claims)],
    }
    return _clean(out)


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return _f(x)
