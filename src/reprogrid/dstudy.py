"""D study: design advice from the variance components of :mod:`reprogrid.gstudy`, and the whole study
(components, G coefficients, advice) as ``reprogrid gstudy`` writes it."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from reprogrid import gstudy as G
from reprogrid.gstudy import ITEM, PROTOCOL, Design


def error_variance(design: Design, table: pd.DataFrame, sizes: dict[str, float], touching: set[int] | None) -> float:
    """sum over random terms v (those meeting the axes ``touching``; None: all) of
    sigma2_v / prod(sizes of v's random facets and item)."""
    total = 0.0
    for _, r in table[table["kind"] == "random"].iterrows():
        if touching is not None and not r["_term"] & touching:
            continue
        div = np.prod([sizes[design.axes[a]] for a in r["_term"] if design.kinds[a] != "fixed"])
        total += r["component_value"] / div
    return float(total)


def _needed(design, table, sizes, touching, facet, target_var, factor) -> float | None:
    """Smallest size of ``facet`` with factor * error variance <= target_var (None: not reachable)."""
    big = dict(sizes, **{facet: 1e12})
    floor = factor * error_variance(design, table, big, touching)
    if floor >= target_var:
        return None
    lo, hi = 1, 2
    while factor * error_variance(design, table, dict(sizes, **{facet: hi}), touching) > target_var:
        lo, hi = hi, hi * 2
        if hi > 1e9:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if factor * error_variance(design, table, dict(sizes, **{facet: mid}), touching) > target_var:
            lo = mid
        else:
            hi = mid
    return float(hi if factor * error_variance(design, table, dict(sizes, **{facet: lo}), touching) > target_var
                 else lo)


def _sentences(halfwidth, difference, power, level, per_cell, items_now, mde) -> list[str]:
    """The D study in words."""
    def items(n):
        return (f"{n:.0f} items per cell" if n is not None else
                "more than any number of items per cell can give (the variance of the other facets "
                "alone is larger: see needed[<facet>])")
    out = [f"at {items_now:.0f} items per cell the smallest difference between two cells (same nest) "
           f"detectable at {power:.0%} power, {1 - level:.0%} two-sided, is "
           f"{(mde['same_nest'] if mde['same_nest'] is not None else mde['any']):.4g}"]
    if difference is not None:
        key = "difference_same_nest" if mde["same_nest"] is not None else "difference_any"
        out.append(f"to tell apart two cells {difference:.4g} apart at {power:.0%} power you need "
                   f"{items(per_cell[key])}")
    out.append(f"for a {level:.0%} interval of half-width {halfwidth:.4g} on a cell score you need "
               f"{items(per_cell['halfwidth'])}")
    return out


def design_advice(design: Design, table: pd.DataFrame, level: float = 0.95, power: float = 0.8,
                  halfwidth: float | None = None, difference: float | None = None) -> dict[str, Any]:
    """D study from the components (formulas below; sizes n_f of the random facets and the item).

    - Cell score (the mean over a cell's items, tasks and seeds): error variance
      V_cell = sum over all random v of sigma2_v / prod_f n_f; half-width = z_{1-a/2} sqrt(V_cell).
    - Difference of two cells on shared items, tasks and seeds (paired): terms that do not involve the
      cells' factors cancel, so V_diff = 2 sum over random v that contain a factor on which the cells differ
      of sigma2_v / prod_f n_f: ``same_nest`` (cells differ only in the crossed protocol factors) and
      ``any`` (cells differ in the nest too; the items differ, so item terms count).
    - Minimum detectable effect (two-sided level a, power 1-b, normal approximation):
      MDE = (z_{1-a/2} + z_{1-b}) sqrt(V_diff).
    - Sizes needed: the smallest n_f (others as in the study) with z sqrt(V_cell) <= halfwidth, or with
      (z_{1-a/2} + z_{1-b}) sqrt(V_diff) <= difference; None when the other facets' variance alone exceeds
      the target (more of this facet cannot get there).
    ``halfwidth`` / ``difference`` default to half the study's cell half-width / same-nest MDE.
    """
    sizes = {a: float(n) for a, n, k in zip(design.axes, design.y.shape, design.kinds) if k != "fixed"}
    z = float(sps.norm.ppf(1 - (1 - level) / 2))
    zp = z + float(sps.norm.ppf(power))
    fixed_axes = {a for a, k in enumerate(design.kinds) if k == "fixed"}
    prot = {design.axes.index(PROTOCOL)} if PROTOCOL in design.axes else set()
    v_cell = error_variance(design, table, sizes, None)
    hw = z * np.sqrt(v_cell)
    cmp = {"same_nest": prot, "any": fixed_axes}
    se = {k: (np.sqrt(2 * error_variance(design, table, sizes, ax)) if ax else None) for k, ax in cmp.items()}
    mde = {k: (zp * s if s is not None else None) for k, s in se.items()}
    halfwidth = float(halfwidth) if halfwidth is not None else hw / 2
    base = mde["same_nest"] if mde["same_nest"] is not None else mde["any"]
    difference = float(difference) if difference is not None else (base / 2 if base else None)
    need: dict[str, Any] = {}
    per_group = {ITEM: "items per (random facets, nest) group"}
    for facet in sizes:
        entry = {"halfwidth": _needed(design, table, sizes, None, facet, (halfwidth / z) ** 2, 1.0)}
        for k, ax in cmp.items():
            entry[f"difference_{k}"] = (_needed(design, table, sizes, ax, facet, (difference / zp) ** 2, 2.0)
                                        if ax and difference else None)
        need[per_group.get(facet, facet)] = entry
    others = np.prod([n for a, n in sizes.items() if a != ITEM])
    per_cell = {k: (v * others if v is not None else None) for k, v in need[per_group[ITEM]].items()}
    return {
        "level": level, "power": power, "sizes": {per_group.get(a, a): n for a, n in sizes.items()},
        "items_per_cell": float(sizes[ITEM] * others),
        "cell_score": {"se": float(np.sqrt(v_cell)), "halfwidth": float(hw)},
        "difference_se": se, "minimum_detectable_effect": mde,
        "targets": {"halfwidth": halfwidth, "difference": difference},
        "needed": need,
        "needed_items_per_cell": per_cell,
        "advice": _sentences(halfwidth, difference, power, level, per_cell, float(sizes[ITEM] * others), mde),
        "population": "new draws of every random facet (" + ", ".join(sizes) + ") from the same generators; "
                      "the fixed factors' levels as in the study",
        "method": " ".join(design_advice.__doc__.split("\n\n", 1)[1].split()),
    }



def generalizability(df: pd.DataFrame, response: str, item: Sequence[str], factors: Sequence[str],
           random: Sequence[str] = (), nest: Sequence[str] = (), level: float = 0.95,
           halfwidth: float | None = None, difference: float | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """G and D study of ``response``: ``random`` facets (columns, e.g. task and data_seed; those among
    ``factors`` are taken out of the fixed ones), items nested in them and in the ``nest`` factors, the other
    ``factors`` fixed. Returns the components table (:data:`reprogrid.gstudy.COLUMNS`) and the details (JSON)."""
    random = list(random)
    nest = [f for f in nest if f not in random]
    fixed = [f for f in factors if f not in random and f not in nest]
    design = G.build_design(df, response, list(item), random, nest, fixed)
    table = G.components(design, level)
    details = {
        "response": response,
        "design": {"facets": {a: {"kind": k, "levels": int(n)} for a, k, n in
                              zip(design.axes, design.kinds, design.y.shape)},
                   "random": [f for f in random if f in design.axes], "nest": nest, "fixed": fixed,
                   "item": list(item), "not_facets": design.dropped, "n_scores": int(design.y.size)},
        "population": ("components: the unrestricted mixed model's variances of the random facets (new tasks, "
                       "seeds, items drawn from the same generators) and the mean squared effects of the fixed "
                       "protocol factors at their levels in the study"),
        "level": level,
        "coefficients": G.coefficients(design, table),
        "design_advice": design_advice(design, table, level, halfwidth=halfwidth, difference=difference),
        "method": " ".join(G.__doc__.split("\n\n", 1)[1].split()),
    }
    noise = float(table.loc[table["kind"] == "random", "component_value"].sum())
    protocol = float(table.loc[table["kind"] == "fixed", "component_value"].sum())
    details["spread"] = {"measurement_noise": noise, "protocol": protocol,
                         "protocol_share": protocol / (noise + protocol) if noise + protocol > 0 else None}
    return table.drop(columns="_term")[G.COLUMNS], details
