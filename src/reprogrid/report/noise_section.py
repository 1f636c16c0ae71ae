"""Measurement noise vs protocol: the variance components of ``attribution/variance_components.json``
(``reprogrid gstudy``: items, tasks and seeds as random facets, the protocol fixed), the G and Phi
coefficients and the design advice that the report prints next to every "not settled" verdict."""

from __future__ import annotations

from reprogrid.report.fmt import Est, finite
from reprogrid.report.inputs import Inputs


def noise_section(inp: Inputs) -> dict | None:
    js = inp.components
    if js is None:
        return None
    if js.get("available") is False:
        return {"available": False, "reason": js.get("reason", "not computed"), "advice": []}
    comps = [{"component": c["component"], "kind": c["kind"],
              "est": Est(c["estimate"], c.get("ci_low"), c.get("ci_high"), scale=1.0),
              "share": f"{c['share'] * 100:.0f}%" if finite(c.get("share")) else "n/a"}
             for c in js.get("components", [])]
    spread = js.get("spread") or {}
    coef = js.get("coefficients") or {}
    total = (spread.get("measurement_noise") or 0) + (spread.get("protocol") or 0)
    return {"available": True, "components": comps,
            "noise_share": f"{spread['measurement_noise'] / total * 100:.0f}%" if total > 0 else "n/a",
            "protocol_share": f"{spread['protocol'] / total * 100:.0f}%" if total > 0 else "n/a",
            "G": f"{coef['G']:.2f}" if finite(coef.get("G")) else "n/a",
            "Phi": f"{coef['Phi']:.2f}" if finite(coef.get("Phi")) else "n/a",
            "advice": list((js.get("design_advice") or {}).get("advice") or []),
            "population": js.get("population", "")}
