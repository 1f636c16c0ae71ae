"""The protocol pitfalls section: each mistake's paired effect and what one mistake does to the best cell
(the numbers of ``pitfalls/pitfalls.json``, written by :mod:`reprogrid.pitfalls`)."""

from __future__ import annotations

from reprogrid.catalogue import cell_text, level_text
from reprogrid.report.fmt import Est
from reprogrid.report.inputs import Inputs


def _cell(c: dict) -> dict:
    return {"score": Est(c["score"], c.get("low"), c.get("high")), "levels": cell_text(c["levels"]),
            "mistakes": cell_text(c["mistakes"]) if c["mistakes"] else "none"}


def pitfalls_section(inp: Inputs) -> dict | None:
    js = inp.pitfalls
    if js is None:
        return None
    rows = [{"mistake": f"{r['factor']}={r['level']}", "reference": r["reference"], "n_pairs": r["n_pairs"],
             "marginal": Est(r["marginal"], r["marginal_low"], r["marginal_high"], signed=True),
             "from_best": Est(r["from_best"], r["from_best_low"], r["from_best_high"]),
             "drop": Est(r["drop"], r["drop_low"], r["drop_high"], signed=True), "verdict": r["verdict"],
             "p": f"{r['p_value']:.2g}" if r.get("p_value") is not None else "n/a", "n_items": r.get("n_items")}
            for r in js["rows"]]
    path = js.get("path") or {}
    steps = [{"factor": c["factor"], "change": f"{level_text(c['low_level'])} → {level_text(c['high_level'])}",
              "contribution": Est(c["contribution"], c.get("ci_low"), c.get("ci_high"), signed=True),
              "p": f"{c['p_value']:.2g}" if c.get("p_value") is not None else "n/a"}
             for c in sorted(path.get("contributions", []), key=lambda c: c["contribution"])]
    return {"rows": rows, "best": _cell(js["best"]), "worst": _cell(js["worst"]), "answer": js["answer"],
            "interval": js["interval"], "bootstrap": js["bootstrap"],
            "path": {"answer": js.get("path_answer"), "steps": steps,
                     "missing": [cell_text(c) for c in path.get("missing_cells", [])]}}
