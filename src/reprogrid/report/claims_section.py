"""The claims section: consistency findings, each claim's explanation by the grid, the pairwise
decomposition of the gap between the two claims, and the reproducibility verdict.

Built from ``claims/findings.txt`` and ``claims/verdicts.json`` (``reprogrid claims check`` and
``reprogrid claims map``); the numbers are the verdicts' own, only formatted here.
"""

from __future__ import annotations

from typing import Any

from reprogrid.catalogue import cell_text, level_text
from reprogrid.report.fmt import Est, decimals_for, finite, fmt_range, num, pt
from reprogrid.report.inputs import Inputs

REPRO_LABELS = {"reproduces": "reproduces", "does_not_reproduce": "does not reproduce",
                "depends_on_unknowns": "depends on factors the low report leaves open",
                "undetermined": "the grid cannot answer"}


def split_finding(line: str) -> dict:
    """A findings.txt line ``[file: ]claim: kind: message`` as its parts."""
    parts = [p.strip() for p in line.split(": ", 3)]
    if len(parts) == 4:
        return {"file": parts[0], "claim": parts[1], "kind": parts[2], "message": parts[3]}
    if len(parts) == 3:
        return {"file": "", "claim": parts[0], "kind": parts[1], "message": parts[2]}
    return {"file": "", "claim": "", "kind": "", "message": line.strip()}


def claim_value_txt(c: dict) -> str:
    if not c:
        return "?"
    rep = c.get("reported")
    if rep is None:
        return pt(c.get("value"))
    return f"{rep:g}" + ("%" if c.get("scale") == "percent" else "")


def protocol_txt(p: dict | None) -> str:
    return cell_text(p or {}, "nothing stated")


def source_txt(s: Any) -> str:
    if isinstance(s, str):
        return s
    if not isinstance(s, dict):
        return ""
    bits = [s.get("paper"), f"arXiv:{s['arxiv']}" if s.get("arxiv") else None, s.get("table"), s.get("section")]
    return ", ".join(str(b) for b in bits if b)


def claim_txt(c: dict | None) -> dict:
    c = c or {}
    return {"id": c.get("id", "?"), "model": c.get("model", "?"), "value": claim_value_txt(c),
            "protocol": protocol_txt(c.get("protocol")), "source": source_txt(c.get("source"))}


def claims_section(inp: Inputs) -> dict | None:
    """None when the study has no claims; otherwise what the claims files say, ready to print."""
    if not inp.cfg.raw.get("claims"):
        return None
    v = inp.verdicts
    out: dict[str, Any] = {"notes": inp.notes.get("claims", []), "findings": [], "explanations": [],
                           "pairwise": None, "repro": None, "pair": None, "available": v is not None}
    if inp.findings is not None:
        out["findings"] = [split_finding(ln) for ln in inp.findings]
        out["findings_source"] = "claims/findings.txt"
    elif v is not None:
        out["findings"] = [{"claim": f["claim_id"], "kind": f["kind"], "message": f["message"]}
                           for f in v.get("findings", [])]
        out["findings_source"] = "claims/verdicts.json"
    if v is None:
        return out
    pair = v.get("pair") or {}
    out["pair"] = {k: claim_txt(pair.get(k)) for k in ("low", "high") if pair.get(k)}
    out["explanations"] = [explanation(e) for e in v.get("explanations", [])]
    out["pairwise"] = pairwise(v.get("pairwise") or {}, pair)
    rp = v.get("reproducibility") or {}
    if rp:
        out["repro"] = reproducibility(rp, pair)
    mef = v.get("most_explanatory_factor") or {}
    out["most_explanatory"] = mef.get("effect") if mef.get("available") else None
    return out


def _which_reading(n_c, n_r) -> str:
    if n_c == 1 and n_r == 1:
        return "the only reading consistent with it"
    if n_c == 1:
        return f"the only one of {n_r} readings consistent with it"
    if n_c == n_r:
        return f"the closest of the {n_r} readings, all consistent with it"
    return f"the closest of {n_c} consistent readings (of {n_r})"


def explanation(e: dict) -> dict:
    """One claim: its best grid reading and the verdict (explained, not explained, cannot answer)."""
    c = e.get("claim", {})
    best = e.get("best")
    row = {"id": c.get("id"), "model": c.get("model"), "claimed": claim_value_txt(c),
           "status": e.get("status"), "source": source_txt(c.get("source")),
           "stated": cell_text(c.get("protocol") or {}, "nothing"),
           "n_readings": e.get("n_readings"), "n_consistent": e.get("n_consistent"),
           "unverified": ", ".join(e.get("unverified") or []), "missing": "; ".join(e.get("missing") or [])}
    if best:
        row["best_levels"] = cell_text(best["levels"], "its one matching cell")
        row["best"] = Est(best["score"], *(best["ci"] if best.get("ci") else (None, None)))
    head = f"{row['id']} ({row['claimed']})"
    if e.get("status") == "matched":
        row["verdict"] = "explained"
        row["text"] = (f"{head} is best explained by {row['best_levels']}: grid score "
                       f"{row['best'].full}, {_which_reading(e.get('n_consistent'), e.get('n_readings'))}.")
    elif e.get("status") == "unmatched":
        row["verdict"] = "not explained"
        row["text"] = (f"{head} is not explained: no reading under its stated protocol "
                       f"reaches it; the closest is {row['best_levels']}, {row['best'].full}.")
    else:
        row["verdict"] = "the grid cannot answer"
        row["text"] = f"{head}: the grid cannot answer: {row['missing'] or 'no matching cell'}."
    if best and best.get("predicted"):
        row["text"] = row["text"][:-1] + (f" (predicted, not run: {best['predicted']} of its "
                                          f"{len(best.get('cell_ids') or [])} cells come from the fractional "
                                          "design's model).")
    return row


def _contribution(r: dict) -> dict:
    return {"factor": r["factor"], "from": level_text(r.get("low_level")), "to": level_text(r.get("high_level")),
            "est": Est(r["contribution"] if finite(r.get("contribution")) else float("nan"),
                       r.get("ci_low") if finite(r.get("ci_low")) else None,
                       r.get("ci_high") if finite(r.get("ci_high")) else None, signed=True)}


def pairwise(pw: dict, pair: dict) -> dict:
    """The gap between the two claims' best cells split into factor contributions (or why not)."""
    if not pw.get("available"):
        extra = ""
        if pw.get("missing_cells"):
            mc = pw["missing_cells"]
            extra = " (" + "; ".join(mc[:4]) + ("; ..." if len(mc) > 4 else "") + ")"
        return {"available": False, "reason": (pw.get("reason") or "not computed") + extra}
    gap = Est(pw["gap"], *(pw["gap_ci"] if pw.get("gap_ci") else (None, None)), signed=True)
    return {"available": True, "low": pt(pw.get("low_value"), gap.d), "high": pt(pw.get("high_value"), gap.d),
            "gap": gap, "contributions": [_contribution(r) for r in pw.get("contributions", [])],
            "largest": pw.get("largest"), "low_value": pw.get("low_value"), "high_value": pw.get("high_value"),
            "low_claimed": (pair.get("low") or {}).get("value"),
            "high_claimed": (pair.get("high") or {}).get("value"),
            "averaged_over": ", ".join(f"{k} ({', '.join(map(level_text, x))})"
                                       for k, x in (pw.get("averaged_over") or {}).items()),
            "predicted_cells": "; ".join(pw.get("predicted_cells") or [])}


def reproducibility(rp: dict, pair: dict) -> dict:
    """Does the high claim's score reproduce under the low claim's stated conditions? As a question and answer."""
    status = rp.get("status")
    label = REPRO_LABELS.get(status, status or "unknown")
    rng_, iv = rp.get("range"), rp.get("interval")
    claimed = pt(rp.get("claimed"))
    if rng_:
        d = decimals_for(*(iv if iv else rng_))
        span = num(rng_[0] * 100, d) if abs(rng_[0] - rng_[1]) < 1e-12 else fmt_range(rng_[0], rng_[1], d)
        ivs = fmt_range(iv[0], iv[1], d) if iv else ""
    else:
        span = ivs = ""
    high_id = (pair.get("high") or {}).get("id", "the high claim")
    question = (f"Does {high_id}'s score ({claimed}) reproduce with {rp.get('model')} under "
                f"{rp.get('conditions_of')}'s stated conditions ({protocol_txt(rp.get('conditions'))})?")
    if status == "undetermined":
        answer = f"{'; '.join(rp.get('missing') or []) or rp.get('summary', '')}."
    else:
        opens = rp.get("unknown_factors") or []
        answer = (f"The grid reads {span}"
                  + (f" (95% CI over the readings {ivs})" if ivs else "")
                  + (f" across the levels of {', '.join(opens)}, which {rp.get('conditions_of')} leaves open"
                     if opens else "") + f", against the claimed {claimed}.")
    return {"status": status, "label": label, "question": question, "answer": answer,
            "summary": rp.get("summary", ""), "n_readings": len(rp.get("readings") or [])}
