"""The report's tables as CSV (for ``snakemake --report``): scores and shares on the fraction scale, as
the pipeline stores them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reprogrid.report.assemble import Sections
from reprogrid.report.fmt import Est
from reprogrid.report.scores import cell_table

SHARES_TABLE = ["effect", "shapley", "ci_low", "ci_high", "share_of_explained", "noise_floor", "above_noise",
                "p_value", "eta2", "omega2", "sobol_total"]
MODELS_TABLE = ["key", "source", "upstream", "sha256", "weights_sha256", "tokenizer_sha256", "method", "kl", "top1",
                "ppl", "ppl_source"]
RUNS_TABLE = ["rule", "target", "seconds", "max_rss_mb"]


def to_csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def _shares(attr: dict) -> pd.DataFrame:
    rows = [{"effect": r["effect"], "shapley": r["share"].value, "ci_low": r["share"].lo, "ci_high": r["share"].hi,
             "share_of_explained": r["explained"].value, "noise_floor": r["floor"], "above_noise": r["above"],
             "p_value": r["p_value"], "eta2": r["eta2"], "omega2": r["omega2"], "sobol_total": r["sobol_total"]}
            for r in attr["rows"]]
    if attr["residual"] is not None:
        rs = attr["residual"]
        rows.append({"effect": "residual", "shapley": rs.value, "ci_low": rs.lo, "ci_high": rs.hi})
    rows += [{"effect": r["effect"], "eta2": r["eta2"], "omega2": r["omega2"]} for r in attr["interactions"]]
    return pd.DataFrame(rows, columns=SHARES_TABLE)


def _specdec(sd: dict) -> pd.DataFrame:
    return pd.DataFrame([{**{k: v for k, v in r.items() if k not in ("speedup", "label")},
                          "speedup_measured": r["speedup"].value,
                          "speedup_ci_low": r["speedup"].lo if r["speedup"].has_ci else np.nan,
                          "speedup_ci_high": r["speedup"].hi if r["speedup"].has_ci else np.nan}
                         for r in sd.get("rows", [])])


def build_tables(sec: Sections) -> dict[str, pd.DataFrame]:
    ctx = sec.context
    t = {"variance_shares": _shares(sec.attr), "main_effects": sec.main_effects.drop(columns=["est"]),
         "context_length": (ctx.drop(columns=["est"]) if ctx is not None and len(ctx) else
                            pd.DataFrame(columns=["context_length", "n_cells", "score", "ci_low", "ci_high"])),
         "cells": cell_table(sec.scores)}
    if sec.claims is not None:
        if sec.inp.claim_cells is not None:
            t["claims"] = sec.inp.claim_cells
        else:
            t["claims"] = pd.DataFrame([{k: (v.value if isinstance(v, Est) else v) for k, v in e.items()}
                                        for e in sec.claims.get("explanations", [])])
    if sec.specdec is not None:
        t["specdec"] = _specdec(sec.specdec)
    t["run_times"] = pd.DataFrame([{k: r[k] for k in RUNS_TABLE} for r in sec.prov["runs"]], columns=RUNS_TABLE)
    t["models"] = pd.DataFrame(sec.prov["models"], columns=MODELS_TABLE)
    return t
