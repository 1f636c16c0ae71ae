"""The caveats section: what limits the findings (truncated prompts, failed cells, tasks that need
downloads, factors below the noise floor, small item counts, imbalance, mixed score scales, runs made
under another config or from uncommitted code, missing inputs)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from reprogrid.catalogue import OFFLINE_TASKS, cell_text
from reprogrid.report.inputs import Inputs
from reprogrid.report.scores import Scores

GENERATION_FACTORS = ("model", "quantization", "context_length", "chat_template")
NOTE_SECTIONS = ("attribution", "claims", "specdec", "provenance")


def _truncated(s: pd.DataFrame) -> dict | None:
    """Truncated prompts, counted as model outputs (generation x task x item), not cell rows."""
    if "truncated" not in s.columns or not len(s):
        return None
    t = s[s["truncated"].astype(bool)]
    keys = [c for c in ("generation_id", "task", "item_id") if c in t.columns]
    n_out = len(t.drop_duplicates(keys)) if keys else len(t)
    total = len(s.drop_duplicates(keys)) if keys else len(s)
    by = []
    cols = [c for c in GENERATION_FACTORS if c in t.columns]
    if n_out and cols:
        g = t.drop_duplicates(keys).groupby(cols, sort=True).size()
        by = [{"levels": cell_text(dict(zip(cols, k if isinstance(k, tuple) else (k,)))), "n": int(n)}
              for k, n in g.items()]
    return {"n_outputs": n_out, "n_rows": len(t), "total": total, "by": by, "n_cells": int(t["cell_id"].nunique())}


def _failed(failed_cells: pd.DataFrame) -> list[dict]:
    """Failed cells grouped by reason, with the generation levels they share."""
    if not len(failed_cells):
        return []
    f = failed_cells.assign(reason=failed_cells.get("reason", pd.Series("", index=failed_cells.index))
                            .fillna("").astype(str).replace("", "no reason recorded"))
    out = []
    for reason, g in f.groupby("reason", sort=True):
        runs = g["generation_id"].nunique() if "generation_id" in g.columns else None
        gen_cols = [c for c in GENERATION_FACTORS if c in g.columns]
        where = sorted({cell_text({c: r[c] for c in gen_cols}) for _, r in g.iterrows()})
        out.append({"reason": reason, "n_cells": len(g), "n_runs": runs, "where": where})
    return out


def _small_n(ok: pd.DataFrame) -> dict | None:
    n_items = pd.to_numeric(ok.get("n_items", pd.Series(dtype=float)), errors="coerce").dropna()
    if not len(n_items):
        return None
    n_min = int(n_items.min())
    return {"n": n_min, "se": 50 / math.sqrt(n_min) if n_min > 0 else float("nan"), "small": n_min < 100}


def caveats_section(inp: Inputs, sc: Scores, attr: dict) -> dict:
    s = inp.samples
    cfg = inp.cfg
    cav: dict[str, Any] = {"truncated": _truncated(s), "failed": _failed(sc.failed)}
    tasks = list(cfg.ruler.get("tasks", []))
    seen = set(s["task"].astype(str)) if "task" in s.columns and len(s) else set()
    cav["tasks"] = {"online": [t for t in tasks if t not in OFFLINE_TASKS], "asset_dir": cfg.ruler.get("asset_dir"),
                    "absent": [t for t in tasks if seen and t not in seen], "offline_list": ", ".join(OFFLINE_TASKS)}
    cav["below_noise"] = [r["effect"] for r in attr["rows"] if r["above"] is False]
    cav["permutations"] = attr.get("permutations")
    cav["small_n"] = _small_n(sc.ok)
    cav["unbalanced"] = attr.get("balanced") is False
    cav["scales"] = "scale" in sc.cells.columns and sc.cells["scale"].nunique() > 1
    # provenance consistency
    gens = inp.generations.values()
    shas = {g.get("config_sha256") for g in gens if g.get("config_sha256")}
    cav["other_config"] = sorted(x for x in shas if x != cfg.sha256)
    codes = sorted({g.get("code_version") for g in gens if g.get("code_version")})
    cav["dirty_code"] = [c for c in codes if str(c).endswith("+dirty") or c == "unknown"]
    cav["n_code_versions"] = len(codes)
    cav["missing_inputs"] = [n for sec in NOTE_SECTIONS for n in inp.notes.get(sec, [])]
    return cav
