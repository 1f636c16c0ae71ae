"""The fractional-design section: what the model-based decomposition of the cells run says, what is aliased,
and how well the model predicts cells it did not see (``attribution/design/design_shares.json``, written by
``reprogrid estimate``; :mod:`reprogrid.attribution.incomplete`)."""

from __future__ import annotations

import math

from reprogrid.report.fmt import Est
from reprogrid.report.inputs import Inputs


def design_section(inp: Inputs) -> dict | None:
    js = inp.design
    if js is None:
        return None
    factors = set(js.get("factors", []))
    rows = [{"effect": e["effect"], "share": _share(e),
             "noise_floor": f"{e['noise_floor']:.3f}" if _finite(e.get("noise_floor")) else "n/a",
             "clears": _finite(e.get("noise_floor")) and _share(e).value > e["noise_floor"]}
            for e in js.get("effects", []) if e["effect"].split(" = ")[0] in factors and _finite(e.get("shapley"))]
    rows.sort(key=lambda r: -r["share"].value)
    ho = js.get("holdout", {})
    holdout = (f"held-out check ({ho.get('method', '')}): {ho['cells']} cells, coverage {ho['coverage']:.2f} of "
               f"nominal {ho['nominal']:.2f}, RMSE {ho['rmse']:.3g}" if "coverage" in ho else
               "held-out check: too few cells run")
    pred = js.get("predicted", {})
    return {"rows": rows, "n_cells": js.get("n_cells"), "n_full": js.get("n_cells_full_grid"),
            "aliased": js.get("aliased", []), "not_estimable": sorted(js.get("not_estimable", {})),
            "partly": sorted(js.get("partly_estimable_not_fitted", {})), "holdout": holdout,
            "predicted": pred.get("cells", 0), "predicted_estimable": pred.get("estimable", 0),
            "model": js.get("method", {}).get("model", "")}


def _share(e: dict) -> Est:
    """The bias-corrected share with its interval where the estimate drew coefficients, else the plug-in."""
    if _finite(e.get("shapley_adj")):
        return Est(e["shapley_adj"], e.get("adj_ci_low"), e.get("adj_ci_high"))
    return Est(e["shapley"], e.get("ci_low"), e.get("ci_high"))


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
