"""The held-out check of an incomplete design's model: leave cells out, refit, predict them.

The cells run are split at random (seeded) into ``folds`` groups; each group is predicted by the model fitted
on the others, with a prediction interval for a measured cell mean of that cell's size (the model's
uncertainty plus the cell's own sampling noise). Reported: predicted vs measured per cell, and the
coverage of the intervals against their nominal level. A held-out cell with a level no training cell has
cannot be predicted from the others and is left out of the summary (``evaluable`` false).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from reprogrid.attribution.modelfit import fit_cells


def holdout(codes: np.ndarray, n_levels: Sequence[int], names: Sequence[str], n: np.ndarray, mean: np.ndarray,
            family: str, within_var: float, folds: int, seed: int, ci: float) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per held-out cell: ``cell`` (its row in ``codes``), fold, n, measured, predicted, interval, covered."""
    C = len(codes)
    K = int(min(max(folds, 2), C)) if C >= 2 else 0
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    order = rng.permutation(C)
    fold = np.empty(C, dtype=np.int64)
    fold[order] = np.arange(C) % K if K else 0
    rows = []
    for f in range(K):
        test = np.flatnonzero(fold == f)
        train = np.flatnonzero(fold != f)
        fit = fit_cells(codes[train], n_levels, names, n[train], mean[train], family, within_var)
        seen = [set(codes[train, j].tolist()) for j in range(codes.shape[1])]
        ok = np.array([all(c[j] in seen[j] for j in range(len(c))) for c in codes[test]])
        p = fit.predict(codes[test], n[test], level=ci)
        for i, cell in enumerate(test):
            inside = bool(p["obs_low"][i] <= mean[cell] <= p["obs_high"][i])
            rows.append({"cell": int(cell), "fold": f, "n": float(n[cell]), "measured": float(mean[cell]),
                         "predicted": float(p["mean"][i]), "pi_low": float(p["obs_low"][i]),
                         "pi_high": float(p["obs_high"][i]), "covered": inside, "evaluable": bool(ok[i])})
    cols = ["cell", "fold", "n", "measured", "predicted", "pi_low", "pi_high", "covered", "evaluable"]
    table = pd.DataFrame(rows, columns=cols).sort_values("cell", kind="stable").reset_index(drop=True)
    return table, summary(table, K, ci)


def summary(table: pd.DataFrame, folds: int, ci: float) -> dict[str, Any]:
    ev = table[table["evaluable"]]
    out: dict[str, Any] = {"method": f"{folds}-fold leave-cells-out over the cells run; {ci:.0%} prediction "
                                     "intervals for each held-out cell's measured mean",
                           "folds": folds, "cells": int(len(ev)), "not_evaluable": int(len(table) - len(ev)),
                           "nominal": ci}
    if len(ev):
        err = ev["predicted"] - ev["measured"]
        out.update(coverage=float(ev["covered"].mean()), rmse=float(np.sqrt(np.mean(err ** 2))),
                   mean_abs_error=float(np.mean(np.abs(err))),
                   correlation=float(np.corrcoef(ev["predicted"], ev["measured"])[0, 1]) if len(ev) > 2 else None)
    return out
