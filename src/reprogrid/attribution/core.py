"""The engine: point estimates, intervals and the noise floor assembled into one :class:`AttributionResult`."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from reprogrid.attribution.anova import Anova
from reprogrid.attribution.inversion import METHOD as INVERSION, inversion_intervals
from reprogrid.attribution.noise import DEFAULT_NOISE_PERMUTATIONS, NOISE_QUANTILE, noise_floor
from reprogrid.attribution.prepare import COLUMNS, RESIDUAL, Data, as_list, check_int, prepare
from reprogrid.attribution.resample import bootstrap_shares, calibrated
from reprogrid.attribution.subsets import Subsets
from reprogrid.errors import UserError
from reprogrid.io import to_jsonable


ALIASED = ("factors that are relabellings of each other (each level of one goes with exactly one level of the "
           "other in the data) cannot be told apart: they are decomposed as one factor, named A+B, whose share is "
           "what they explain together; 'aliased' lists them")


MAX_INVERSION_WORK = 5e9  # beyond this (e.g. 14 factors with thousands of cells) the normal interval is kept

CALIBRATED = {
    "population": ("the same protocol cells (and cell weights) measured on infinitely many items from the same "
                   "generator: the share v(S) takes with the population cell means and within-cell variance"),
    "estimator": ("shapley_adj = shapley - U/(U-H) * (mean of the bootstrap replicates - shapley): the sampling "
                  "noise of the cell means, which an R^2 counts as effect, is removed (U items, H strata); "
                  "sobol_total_adj likewise"),
    "ci": ("adj_ci_low/adj_ci_high: an interval for the population share at the nominal level; gaussian family: "
           "the test-inversion bootstrap interval ('interval'), binomial family: shapley_adj -/+ z * bootstrap "
           "standard error. ci_low/ci_high (percentile interval of the replicates) describe the estimate's "
           "resampling spread and sit above the population share by the noise"),
}


@dataclass
class AttributionResult:
    """``table``: one row per effect with :data:`COLUMNS`; ``details``: method and settings (JSON)."""

    table: pd.DataFrame
    details: dict[str, Any] = field(default_factory=dict)
    replicates: pd.DataFrame | None = None  # bootstrap replicates of shapley (columns: factors, residual)

    def to_json_obj(self) -> dict[str, Any]:
        rows = [{k: to_jsonable(v) for k, v in rec.items()} for rec in self.table.to_dict(orient="records")]
        return {"effects": rows, **to_jsonable(self.details)}


def _single_threaded_blas():
    """All matrices here are small: threaded BLAS only spins, and on a busy 2-core machine it is
    dozens of times slower (measured: a 4072 x 79 QR went from 8 ms to 450 ms)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional; present with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def attribute(
    df: pd.DataFrame,
    response: str,
    factors: Sequence[str],
    item: str | Sequence[str] | None = None,
    family: str = "gaussian",
    bootstrap: int = 0,
    seed: int = 0,
    ci: float = 0.95,
    noise_floor_permutations: int = DEFAULT_NOISE_PERMUTATIONS,
) -> AttributionResult:
    """Variance (gaussian) or deviance (binomial) shares of ``response`` over ``factors``.

    ``item``: column(s) identifying the resampling unit (several columns form a composite key); without
    it every row is a unit. ``bootstrap``: replicates for the ``shapley`` interval (0: no interval).
    ``noise_floor_permutations``: permutations per factor for ``noise_floor`` (0: none).
    """
    with _single_threaded_blas():
        return _attribute(df, response, factors, item, family, bootstrap, seed, ci, noise_floor_permutations)


def _check_options(bootstrap: Any, permutations: Any, seed: Any, ci: Any) -> tuple[int, int, int, float]:
    bootstrap = check_int(bootstrap, "bootstrap", 0)
    permutations = check_int(permutations, "noise_floor_permutations", 0)
    seed = check_int(seed, "seed", 0)
    try:
        ci = float(ci)
    except (TypeError, ValueError):
        raise UserError(f"expected a number in (0, 1), got {ci!r}", field="ci") from None
    if not 0 < ci < 1:
        raise UserError(f"expected a number in (0, 1), got {ci}", field="ci")
    return bootstrap, permutations, seed, ci


def _attribute(df, response, factors, item, family, bootstrap, seed, ci, noise_floor_permutations):
    factors = list(as_list(factors))
    items = as_list(item)
    bootstrap, permutations, seed, ci = _check_options(bootstrap, noise_floor_permutations, seed, ci)
    data = prepare(df, response, factors, items, family)
    factors = data.factors  # aliased factors merged
    k = len(factors)
    subsets = Subsets(data.cell_codes)
    extra_total = data.cell_q.sum() if family == "gaussian" else data.cell_h.sum()
    v = subsets.v(data.cell_n, data.cell_s, np.array([extra_total]), family)
    shap = subsets.shapley(v)[0]
    anova = Anova(data, family).table()
    boot_seq, perm_seq = np.random.SeedSequence(seed).spawn(2)

    ci_low, ci_high = np.full(k + 1, np.nan), np.full(k + 1, np.nan)
    boot_info: dict[str, Any] = {"replicates": bootstrap, "ci": ci}
    bshap = None
    st = subsets.sobol_total(v)[0]
    adj = {c: np.full(k + 1, np.nan) for c in ("shapley_adj", "adj_ci_low", "adj_ci_high", "sobol_total_adj")}
    if bootstrap > 0:
        ci_low, ci_high, info, bshap, bsobol, sums = bootstrap_shares(data, subsets, family, bootstrap, ci,
                                                                      boot_seq, items, shap)
        boot_info.update(info)
        est = np.append(shap, 1.0 - v[0, subsets.full])
        adj["shapley_adj"], adj["adj_ci_low"], adj["adj_ci_high"], se = calibrated(
            est, bshap, data.n_units, info["n_strata"], ci)
        adj["sobol_total_adj"] = calibrated(np.append(st, est[-1]), bsobol, data.n_units, info["n_strata"], ci)[0]
        interval = "normal (shapley_adj -/+ z x bootstrap standard error)"
        # each factor's worlds pass over the (replicates x all subsets' groups) array about ten times
        work = (bootstrap + 1) * subsets.G.shape[1] * (k + 1) * 10
        if family == "gaussian" and work > MAX_INVERSION_WORK:
            interval += f"; test inversion skipped: {work:.2g} operations > {MAX_INVERSION_WORK:.0e}"
        elif family == "gaussian":
            adj["adj_ci_low"], adj["adj_ci_high"] = inversion_intervals(
                subsets, data.cell_codes, data.cell_n, data.cell_s, float(extra_total), *sums, est, ci,
                data.n_units, info["n_strata"])
            interval = INVERSION
        boot_info["calibrated"] = {"interval": interval, "se": dict(zip([*factors, RESIDUAL], se.tolist())),
                                   **CALIBRATED}
    noise = np.full(k, np.nan)
    noise_info: dict[str, Any] = {"permutations": permutations, "quantile": NOISE_QUANTILE}
    if permutations > 0:
        noise, info = noise_floor(data, subsets, family, permutations, perm_seq, extra_total, shap)
        noise_info.update(info)

    v_all = float(v[0, subsets.full])
    table = _table(factors, anova, shap, st, v_all, ci_low, ci_high, noise, adj)
    details = _details(data, family, response, items, anova, bootstrap, v_all)
    details["first_order"] = dict(zip(factors, [float(v[0, 1 << j]) for j in range(k)]))
    details.update({"bootstrap": boot_info, "noise_floor": noise_info, "seed": seed})
    if data.aliased:
        details["aliased"] = data.aliased
        details["method"]["aliased"] = ALIASED
    if k <= 10:
        details["v"] = {(":".join(factors[j] for j in range(k) if m >> j & 1) or "(none)"): float(v[0, m])
                        for m in range(subsets.n_masks)}
    replicates = pd.DataFrame(bshap, columns=[*factors, RESIDUAL]) if bshap is not None else None
    return AttributionResult(table=table, details=details, replicates=replicates)


def _table(factors, anova, shap, st, v_all, ci_low, ci_high, noise, adj) -> pd.DataFrame:
    k = len(factors)
    total_ss, ms_e = anova["total_ss"], anova["scale"]
    rows = []
    for j, f in enumerate(factors):
        e = anova["effects"][j]
        rows.append(_row(f, e, total_ss, ms_e, shap[j], st[j], ci_low[j], ci_high[j], noise[j]))
    for e in anova["effects"][k:]:
        rows.append(_row(e["effect"], e, total_ss, ms_e, np.nan, np.nan, np.nan, np.nan, np.nan))
    rows.append({"effect": RESIDUAL, "eta2": anova["residual_ss"] / total_ss, "omega2": np.nan,
                 "shapley": 1.0 - v_all, "sobol_total": 1.0 - v_all,
                 "ci_low": ci_low[k], "ci_high": ci_high[k], "noise_floor": np.nan})
    at = list(range(k)) + [len(rows) - 1]  # factor rows and the residual row
    for c, values in adj.items():
        for i, value in zip(at, values):
            rows[i][c] = value
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.astype({c: np.float64 for c in COLUMNS[1:]})


def _row(name, e, total, ms_e, shap, st, lo, hi, nf) -> dict[str, Any]:
    ss, df_t = e["ss"], e["df"]
    eta2 = ss / total if np.isfinite(ss) else np.nan
    omega2 = (ss - df_t * ms_e) / (total + ms_e) if np.isfinite(ss) and np.isfinite(ms_e) else np.nan
    return {"effect": name, "eta2": eta2, "omega2": omega2, "shapley": shap, "sobol_total": st,
            "ci_low": lo, "ci_high": hi, "noise_floor": nf}


def _method(family: str, bootstrap: int) -> dict[str, str]:
    measure = "R^2 (1 - within-group SS / total SS)" if family == "gaussian" else \
        "deviance R^2 (1 - D(S)/D(null); McFadden's R^2 for 0/1 outcomes)"
    return {
        "v": f"v(S) = {measure} of the response on the full interaction of the factors in S",
        "shapley": "Shapley value of each factor under v (exact, all 2^k subsets); residual = 1 - v(all)",
        "sobol_total": "v(all) - v(all but the factor); residual = 1 - v(all)",
        "anova": ("type-II " + ("sums of squares" if family == "gaussian" else "likelihood-ratio (deviance) drops")
                  + " with all main effects and two-way interactions; higher orders pooled into the residual; "
                  "fitted on cell sufficient statistics (identical to the row-level fit)"),
        "eta2": "SS_effect / SS_total" + ("" if family == "gaussian" else " (deviance drop / null deviance)"),
        "omega2": "(SS_effect - df_effect * MS_E) / (SS_total + MS_E)"
                  + ("" if family == "gaussian" else " with MS_E = Pearson dispersion of the ANOVA model"),
        "interval": "percentile bootstrap of shapley over resampled items" if bootstrap else "none",
    }


def _details(data: Data, family: str, response: str, items: list[str], anova: dict, bootstrap: int,
             v_all: float) -> dict[str, Any]:
    C = len(data.cell_n)
    full_cells = math.prod(int(x) for x in data.n_levels)
    balanced = bool(C == full_cells and np.all(data.cell_n == data.cell_n[0]))
    return {
        "method": _method(family, bootstrap),
        "family": family,
        "response": response,
        "factors": list(data.factors),
        "levels": {f: [to_jsonable(x) for x in lv] for f, lv in zip(data.factors, data.levels)},
        "item": items or None,
        "n_rows": data.n_rows,
        "n_units": data.n_units,
        "n_cells": C,
        "n_cells_full_grid": full_cells,
        "missing_cells": full_cells - C,
        "balanced": balanced,
        "response_mean": float(data.cell_s.sum() / data.cell_n.sum() + data.y_mean),
        "v_all": v_all,
        "anova": {
            "total": anova["total_ss"], "total_df": anova["total_df"],
            "residual": anova["residual_ss"], "residual_df": anova["residual_df"],
            "ms_error": anova["scale"],
            "effects": {e["effect"]: {"ss": e["ss"], "df": e["df"]} for e in anova["effects"]},
        },
    }
