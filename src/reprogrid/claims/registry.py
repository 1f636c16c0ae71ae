"""The claims registry: read and validate claims files into ``Claim`` records.

A claims file is validated against ``schema/claims.schema.yaml`` (one-line errors, as for the study
config); the ``protocol`` of a claim is checked against the study schema's factors, each level as the
study checks it (``attn_implementation`` and ``quantization`` accept any string: a source may name a
method the pipeline does not implement). The checks a schema cannot state are here: ids unique over
all files read together, component keys as levels of ``aggregate_over`` (4096 and "4096" are one
level), ``weights`` with the components' keys, finite numbers. A key whose value is null is absent.

Model names: ``model`` takes the study's slug (``qwen2.5-14b-instruct-1m``) or the name a paper uses
(``Qwen/Qwen2.5-14B-Instruct-1M``, ``Qwen2.5-14B-Instruct-1M``). ``model_slug`` is the one
normalisation: drop the hub owner (``Qwen/``), then lowercase. The claim keeps both (``model`` = the
slug, ``model_name`` = as written).
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

from reprogrid.catalogue import level_text as canon
from reprogrid.catalogue import load_schema
from reprogrid.errors import UserError, path_text, validate
from reprogrid.io import load_yaml

SCALE_MAX = {"percent": 100, "fraction": 1}
OPEN_VOCABULARY = frozenset({"attn_implementation", "quantization"})
OPTIONAL_KEYS = ("decimals", "n_items", "item_denominator", "aggregate", "aggregate_over", "components",
                 "weights", "verification", "notes", "stated")
NULL_LEVEL = "null is not a level; leave the factor out if the source does not state it"
VERIFICATION = ("seen", "secondary", "not_found")


def model_slug(name: str) -> str:
    """The study slug of a model name: drop a hub owner (``Qwen/``), lowercase.

    ``Qwen/Qwen2.5-14B-Instruct-1M`` and ``Qwen2.5-14B-Instruct-1M`` -> ``qwen2.5-14b-instruct-1m``;
    a slug is unchanged."""
    return str(name).strip().rsplit("/", 1)[-1].lower()


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
    model_name: str = ""
    weights: dict | None = None
    verification: dict | None = None

    @property
    def unit(self) -> int:
        return SCALE_MAX[self.scale]

    @property
    def fraction(self) -> float:
        """The value on the fraction (0-1) scale (95.7 percent -> 0.957, exactly as written)."""
        return float(exact(self.value) / self.unit)

    @property
    def precision(self) -> int:
        """Decimals of the value: ``decimals`` if given, else as many as the value shows."""
        return self.decimals if self.decimals is not None else decimals_of(self.value)

    @property
    def tolerance(self) -> float:
        """Half a unit of the last reported decimal, on the fraction scale."""
        return 0.5 * 10 ** (-self.precision) / self.unit

    @property
    def status(self) -> str:
        """Verification status: seen, secondary, not_found, or unverified (no `verification`)."""
        return (self.verification or {}).get("status", "unverified")

    @property
    def traceable(self) -> bool:
        """Seen in the source it is attributed to."""
        return self.status == "seen"

    @property
    def source_key(self) -> str:
        """What identifies the source: its arXiv id, else its paper, url or table."""
        s = self.source
        return str(s.get("arxiv") or s.get("paper") or s.get("url") or s.get("table") or "")

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


def exact(x: float | int) -> Fraction:
    """The decimal number as written (repr), exactly."""
    return Fraction(Decimal(repr(x))) if isinstance(x, float) else Fraction(int(x))


# ---------------------------------------------------------------------------------------------------
# the schema, with the study's factors as the protocol's keys


def level_schema(name: str) -> dict:
    """The JSON schema of one stated level of factor ``name`` (as the study schema declares its levels)."""
    spec = dict(load_schema("config")["properties"]["factors"]["properties"][name].get("items", {}))
    if name in OPEN_VOCABULARY:
        spec = {"type": "string", "minLength": 1}
    spec["x-null"] = NULL_LEVEL
    spec["x-messages"] = {"enum": "expected one of {enum}, got {value}"}
    return spec


@functools.cache
def claims_schema() -> dict:
    """``schema/claims.schema.yaml`` with ``protocol``'s keys: every study factor but ``model``."""
    schema = copy.deepcopy(load_schema("claims"))
    names = _factor_names()
    proto = schema["$defs"]["claim"]["properties"]["protocol"]
    proto["properties"] = {n: level_schema(n) for n in names}
    proto["properties"]["model"] = {
        "not": {}, "x-messages": {"not": "the model is the claim's own `model` field; remove it from the protocol"}}
    proto["additionalProperties"] = False
    proto.setdefault("x-messages", {})["additionalProperties"] = \
        f"unknown factor {{key}}; known factors: {', '.join(names)}"
    return schema


def _drop_nulls(raw: dict) -> dict:
    """Optional keys given as null are absent; ``protocol:`` with nothing means no stated factor."""
    items = raw.get("claims")
    if not isinstance(items, list):
        return raw
    clean = []
    for item in items:
        if isinstance(item, dict):
            item = {k: ({} if k == "protocol" and v is None else v) for k, v in item.items()
                    if not (v is None and k in OPTIONAL_KEYS)}
        clean.append(item)
    return {**raw, "claims": clean}


def _factor_names() -> list[str]:
    return [n for n in load_schema("config")["properties"]["factors"]["properties"] if n != "model"]


def _number(v: Any, field: str) -> None:
    if isinstance(v, float) and not math.isfinite(v):
        raise UserError(f"expected a finite number, got {v!r}", field=field)


def _check_claim(item: dict, path: str, i: int) -> None:
    """What the schema cannot state about one claim (it passed the schema)."""
    _number(item["value"], f"{path}: {path_text(['claims', i, 'value'])}")
    over = item.get("aggregate_over")
    comps = item.get("components") or {}
    spec = level_schema(over) if over in _factor_names() else None
    seen: dict[str, Any] = {}
    for key, v in comps.items():
        field = f"{path}: {path_text(['claims', i, 'components', key])}"
        if spec is not None:
            validate(key, spec, path, prefix=("claims", i, "components", key))
        c = canon(key)
        if c in seen:
            raise UserError(f"level given twice ({seen[c]!r} and {key!r})", field=field)
        seen[c] = key
        _number(v, field)
    if over is not None and over in (item.get("protocol") or {}):
        raise UserError(f"{over!r} is aggregated over (its levels are the component keys); remove it from the "
                        "protocol", field=f"{path}: {path_text(['claims', i, 'protocol', over])}")
    weights = item.get("weights")
    if weights is not None:
        have, want = {canon(k) for k in weights}, set(seen)
        if have != want:
            bits = [f"missing {', '.join(sorted(want - have))}" if want - have else "",
                    f"not components: {', '.join(sorted(have - want))}" if have - want else ""]
            raise UserError(f"expected the components' keys ({'; '.join(b for b in bits if b)})",
                            field=f"{path}: {path_text(['claims', i, 'weights'])}")
        if not sum(float(w) for w in weights.values()) > 0:
            raise UserError("the weights sum to 0", field=f"{path}: {path_text(['claims', i, 'weights'])}")


def _claim(item: dict, path: str, i: int) -> Claim:
    src = item["source"]
    source = {"paper": src} if isinstance(src, str) else dict(src)
    weights = None
    if item.get("weights") is not None:
        by_canon = {canon(k): w for k, w in item["weights"].items()}
        weights = {k: by_canon[canon(k)] for k in item["components"]}
    return Claim(id=item["id"], source=source, model=model_slug(item["model"]), benchmark=item["benchmark"],
                 value=item["value"], scale=item["scale"], protocol=dict(item.get("protocol") or {}),
                 decimals=item.get("decimals"), n_items=item.get("n_items"),
                 item_denominator=item.get("item_denominator", 1), aggregate=item.get("aggregate"),
                 aggregate_over=item.get("aggregate_over"),
                 components=dict(item["components"]) if item.get("components") else None,
                 notes=item.get("notes"), stated=tuple(item.get("stated") or ()), file=path, index=i,
                 model_name=item["model"], weights=weights,
                 verification=_verification(item.get("verification")))


def _verification(v: dict | None) -> dict | None:
    """``{status, where}`` with ``where`` on one line (a folded YAML block ends with a newline)."""
    return {"status": v["status"], "where": " ".join(str(v["where"]).split())} if v else None


def read_claims_file(path: Path) -> list[Claim]:
    """One file, validated (schema, then what the schema cannot state), as claims."""
    p = str(path)
    raw = load_yaml(path)
    if raw is None:
        raise UserError("the file is empty; expected a mapping with a 'claims:' list", field=p)
    if isinstance(raw, dict):
        raw = _drop_nulls(raw)
    validate(raw, claims_schema(), p)
    out = []
    for i, item in enumerate(raw["claims"]):
        _check_claim(item, p, i)
        out.append(_claim(item, p, i))
    return out


def load_claims(paths: Iterable[str | Path]) -> list[Claim]:
    """Read and validate claims files; raise UserError (naming file and field) on the first problem."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("no claims file given", field="FILE")
    claims: list[Claim] = []
    first: dict[str, Claim] = {}
    for path in paths:
        for claim in read_claims_file(path):
            if claim.id in first:
                other = first[claim.id]
                raise UserError(f"duplicate id {claim.id!r} (first at {other.where()})", field=claim.where("id"))
            first[claim.id] = claim
            claims.append(claim)
    return claims
