"""The three research questions, each answered from all the evidence the study has, with where the answer
comes from and how sure it is:

1. Which factor explains most of the spread? The measured grid (variance shares and their noise floor),
   the measured pitfalls (the largest single-mistake drop) and the published record (``published.csv``,
   the claims findings).
2. The best-supported explanation of each claim, given its stated protocol *and its verification status*:
   a claim not found in its cited source, or equal to another model's number, is explained by the record
   before any grid reading is offered.
3. Does the high score reproduce under the low claim's conditions? On the claim's model when the grid has
   it (the verdict); otherwise on the closest proxy the grid has (same model family, labelled a proxy) and,
   always, the cells a GPU study would need to settle it (an ``include:`` list).

"The grid cannot answer" never stands alone: every such statement is followed by what the evidence does say.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from reprogrid.catalogue import cell_text, level_text
from reprogrid.report.claims_section import claim_value_txt
from reprogrid.report.fmt import Est, pt
from reprogrid.report.inputs import Inputs
from reprogrid.report.scores import Scores

FINDING_ORDER = ["not_traceable", "possible_misattribution", "aggregate_mismatch"]


def family(name: str | None) -> str:
    """The model family a name or slug starts with: 'qwen2.5' for Qwen/Qwen2.5-7B-Instruct-1M, qwen25-coder-0.5b."""
    m = re.match(r"(?:[\w.-]+/)?([a-z]+)[-_]?(\d+)(?:\.(\d+))?", str(name or "").lower())
    if not m:
        return ""
    major, minor = m.group(2), m.group(3)
    if minor is None and len(major) == 2:  # qwen25 = qwen2.5
        major, minor = major[0], major[1]
    return f"{m.group(1)}{major}" + (f".{minor}" if minor else "")


def _findings(v: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in v.get("findings") or []:
        out.setdefault(f["claim_id"], []).append(f)
    for lst in out.values():
        lst.sort(key=lambda f: FINDING_ORDER.index(f["kind"]) if f["kind"] in FINDING_ORDER else 99)
    return out


def q1(head: dict, pitfalls: dict | None, published: pd.DataFrame | None, v: dict | None) -> dict:
    evidence = []
    if head.get("available"):
        top = head["top"]
        evidence.append(f"Measured grid: {top['effect']} has the largest share, {top['share'].full} of the total "
                        f"variance ({head.get('noise_short', 'noise floor not computed')}).")
    else:
        evidence.append(f"Measured grid: {head.get('text', 'no variance shares')}")
    if pitfalls:
        evidence.append(f"Measured pitfalls: {pitfalls['answer']}")
    if published is not None and len(published):
        vals = published[published["row"].isin(["value", "aggregate"])]
        seen = vals[vals["status"] == "seen"]
        evidence.append(f"Published record: {len(vals)} Qwen2.5 RULER numbers from "
                        f"{vals['source'].nunique()} sources, {pt(vals['value'].min())} to "
                        f"{pt(vals['value'].max())}; {len(seen)} verified in their cited source.")
    nt = (v or {}).get("pair", {}).get("not_traceable") or []
    if nt:
        evidence.append(f"The pair's spread is not a measured protocol spread: {', '.join(nt)} "
                        f"{'is' if len(nt) == 1 else 'are'} not traceable to the cited source.")
    sure = ("measured, clears the noise floor" if head.get("available") and head["top"].get("above")
            else "measured, but not separated from item noise" if head.get("available") else "not measured")
    return {"evidence": evidence, "confidence": sure}


def q2(v: dict) -> list[dict]:
    """Per claim of the pair, or with a finding, or that the grid reads: the record first (verification,
    findings), then the grid reading. The other claims are summed up in one last row."""
    found = _findings(v)
    pair = {(v.get("pair") or {}).get(k, {}).get("id") for k in ("low", "high")}
    rows, others = [], []
    for e in v.get("explanations") or []:
        c = e.get("claim", {})
        if c.get("id") not in pair and c.get("id") not in found and e.get("status") not in ("matched", "unmatched"):
            others.append((c.get("verification") or {}).get("status") or "unverified")
            continue
        ver = c.get("verification") or {}
        status = ver.get("status") or "unverified"
        head = f"{c.get('id')} ({claim_value_txt(c)}, {c.get('model_name') or c.get('model')})"
        record = [f"{f['kind'].replace('_', ' ')}: {f['message']}" for f in found.get(c.get("id"), [])]
        if e.get("status") == "matched" and e.get("best"):
            b = e["best"]
            grid = (f"the grid reproduces it under {cell_text(b['levels'], 'its one matching cell')}: "
                    f"{Est(b['score'], *(b.get('ci') or (None, None))).full}")
        elif e.get("status") == "unmatched" and e.get("best"):
            b = e["best"]
            grid = (f"no reading under its stated protocol reaches it (closest "
                    f"{Est(b['score'], *(b.get('ci') or (None, None))).full})")
        else:
            grid = "its model or conditions are not in this grid: " + "; ".join((e.get("missing") or [])[:2])
        kinds = [f["kind"] for f in found.get(c.get("id"), [])]
        if "possible_misattribution" in kinds:
            best = "most likely another report's number misattributed (the record, not the protocol)"
        elif "not_traceable" in kinds:
            best = "not traceable to its cited source: no protocol explanation is better supported than that"
        elif "aggregate_mismatch" in kinds:
            best = "an aggregate that no standard RULER aggregation of its components gives"
        elif e.get("status") == "matched":
            best = "explained by the grid reading"
        else:
            best = "unexplained by this grid"
        sure = {"seen": f"verified ({ver.get('where')})", "secondary": f"secondary source ({ver.get('where')})",
                "not_found": "not found in its cited source", "unverified": "unverified"}.get(status, status)
        rows.append({"claim": head, "best": best, "record": record, "grid": grid, "verification": sure})
    if others:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(pd.Series(others).value_counts().items()))
        rows.append({"claim": f"{len(others)} other claims", "best": "their models or conditions are not in this "
                     "grid and the record raises nothing about them", "record": [], "grid": "no reading",
                     "verification": counts})
    return rows


def _matching(sc: Scores, conditions: dict) -> tuple[pd.DataFrame, list[str]]:
    ok, absent = sc.ok, []
    for k, val in (conditions or {}).items():
        if k == "model":
            continue
        keep = ok[k].map(level_text) == level_text(val) if k in ok.columns else None
        if keep is None or not keep.any():  # a stated level the grid does not have: every level stands in
            absent.append(f"{k}={level_text(val)}")
            continue
        ok = ok[keep]
    return ok, absent


def q3(v: dict, sc: Scores, cfg) -> dict:
    rp = v.get("reproducibility") or {}
    pair = v.get("pair") or {}
    low, high = pair.get("low") or {}, pair.get("high") or {}
    out: dict[str, Any] = {"status": rp.get("status"), "verdict": rp.get("summary", ""), "proxy": None}
    conditions = rp.get("conditions") or low.get("protocol") or {}
    want = family(high.get("model_name") or high.get("model"))
    proxies = [m for m, entry in cfg.models.items()
               if m in set(sc.ok.get("model", pd.Series(dtype=str)).astype(str))
               and family(entry.get("family") or m) == want]
    if rp.get("status") == "undetermined" and proxies:
        cells, absent = _matching(sc, conditions)
        cells = cells[cells["model"].astype(str).isin(proxies)]
        if len(cells):
            est = {c: sc.estimate([c]) for c in cells["cell_id"]}
            lo_c = min(est, key=lambda c: est[c].value)
            hi_c = max(est, key=lambda c: est[c].value)
            levels = {c: cell_text({k: r[k] for k in sc.varying if k in r}, "the only cell")
                      for c, r in cells.set_index("cell_id").iterrows()}
            out["proxy"] = (
                f"Proxy ({', '.join(proxies)}: same family ({want}), smaller model; not the claim's model): under "
                f"{low.get('id')}'s stated conditions ({cell_text(conditions, 'nothing stated')}"
                + (f"; not in the grid: {', '.join(absent)}" if absent else "")
                + f"), {len(cells)} cells score from {est[lo_c].full} ({levels[lo_c]}) to {est[hi_c].full} "
                f"({levels[hi_c]}), against the claimed {claim_value_txt(high)} and {claim_value_txt(low)}.")
    out["settle"] = None
    if rp.get("status") != "undetermined":
        return out
    settle = {**{k: level_text(x) for k, x in conditions.items() if k != "model"}, "model": high.get("model")}
    out["settle"] = ("Cells that settle it on a GPU (add under `include:` of a study with that model, e.g. "
                     f"configs/studies/qwen25_ruler_pair_gpu.yaml): {cell_text(settle)}, every level of the "
                     "factors the low claim leaves open.")
    return out


def research_section(inp: Inputs, sc: Scores, head: dict, pitfalls: dict | None) -> dict | None:
    v = inp.verdicts
    if v is None:
        return None
    return {"q1": q1(head, pitfalls, inp.published, v), "q2": q2(v), "q3": q3(v, sc, inp.cfg)}
