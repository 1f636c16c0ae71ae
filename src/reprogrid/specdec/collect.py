"""The study's cell tables -> ``specdec.parquet``, ``specdec_steps.parquet`` and ``disparity.json``
(``reprogrid specdec collect``), and the attribution of the spread to the study's factors
(``reprogrid specdec attribute``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reprogrid.errors import UserError
from reprogrid.specdec.cells import STUDY_FACTORS, study_seed, study_settings
from reprogrid.specdec.disparity import disparity
from reprogrid.specdec.study import STEP_COLUMNS

# per-task means of these (when present) in disparity.json's by_pair entries
PER_TASK_MEANS = ["alpha_greedy", "alpha_analytic", "alpha_empirical", "acceptance_rate_tokens", "tokens_per_step",
                  "expected_tokens_per_step", "expected_tokens_per_step_greedy", "c", "verify_cost_ratio",
                  "speedup_measured", "speedup_predicted", "speedup_predicted_greedy", "speedup_predicted_block",
                  "cross_entropy", "kl"]
BY_CELL_KEYS = ("max_group", "min_group", "max_min_ratio", "max_min_ratio_ci", "cv", "cv_ci", "ce_variance", "groups")
POOLED_SCOPE = ("all measured cells pooled (every pair, gamma, decoding, mix and chat level); the bootstrap "
                "unit is the prompt: each prompt's values are first averaged over the cells it ran in")


def predicted_speedup_block(df):
    """E / (gamma * c + verify_cost_ratio) per row: the speed-up model with the measured cost of verifying a
    gamma+1-token block (``verify_cost_ratio`` = block time / single-token time; 1 in the textbook model, where the
    prediction is ``speedup_predicted``). E uses the acceptance rule the decoding applies: ``alpha_greedy`` under
    greedy decoding, ``alpha_analytic`` under sampling. reprogrid's own refinement, for hardware (CPU) where
    a block costs more than one token."""
    import pandas as pd

    num = lambda col: pd.to_numeric(df.get(col, pd.Series(np.nan, index=df.index)), errors="coerce")  # noqa: E731
    greedy = df.get("decoding", pd.Series("", index=df.index)).astype(str) == "greedy"
    e = num("expected_tokens_per_step_greedy").where(greedy, num("expected_tokens_per_step"))
    return (e / (num("gamma") * num("c") + num("verify_cost_ratio"))).astype(float)


def per_prompt(df):
    """One row per (task, prompt_id): the mean of each measured quantity over the cells the prompt ran in.

    The same prompts run in every cell (mix only reorders them, and greedy acceptance is order-invariant), so rows
    of one prompt are not independent draws; disparity intervals resample prompts, not rows."""
    import pandas as pd

    cols = ["speedup_measured", "alpha_empirical", "alpha_analytic", "alpha_greedy", "cross_entropy"]
    data = df[["task", "prompt_id"]].copy()
    for c in cols:
        data[c] = pd.to_numeric(df[c], errors="coerce") if c in df.columns else np.nan
    return data.groupby(["task", "prompt_id"], sort=True, as_index=False)[cols].mean()


def _sibling(table: Path, suffix: str) -> Path:
    """``<cell>.parquet`` -> ``<cell><suffix>`` in the same directory."""
    return table.with_name(table.name.removesuffix(".parquet") + suffix)


def _read_cells(tables: list) -> tuple[list, list, dict]:
    """The cell tables, their step tables (where present) and each cell's status (from ``<cell>.json``)."""
    from reprogrid.io import read_json, read_table

    frames, step_frames, statuses = [], [], {}
    for t in map(Path, tables):
        frames.append(read_table(t, what="cell table"))
        if _sibling(t, ".steps.parquet").is_file():
            step_frames.append(read_table(_sibling(t, ".steps.parquet")))
    if not frames:
        raise UserError("no cell tables given", field="TABLES")
    for t, f in zip(map(Path, tables), frames):
        meta_path = _sibling(t, ".json")
        meta = read_json(meta_path) if meta_path.is_file() else {}
        statuses[meta.get("cell_id", t.stem)] = meta.get("status", "ok" if len(f) else "empty")
    return frames, step_frames, statuses


def _pair_entry(g, n_boot: int, seed: int) -> dict:
    """Speed-up and acceptance disparity of one pair (prompts as the unit) and its per-task means."""
    import pandas as pd

    prompts = per_prompt(g)
    acc = prompts[np.isfinite(prompts["alpha_empirical"].to_numpy(dtype=float))]
    per_task = g.groupby("task", sort=True)[[m for m in PER_TASK_MEANS if m in g.columns]].agg(
        lambda x: float(pd.to_numeric(x, errors="coerce").mean()))
    return {
        "speedup": disparity(prompts, "speedup_measured", "task", n_boot=n_boot, seed=seed),
        "acceptance": disparity(acc, "alpha_empirical", "task", n_boot=n_boot, seed=seed) if len(acc) else None,
        "per_task": {str(t): {k: float(v) for k, v in row.items()} for t, row in per_task.iterrows()},
    }


def _invariance(g) -> dict | None:
    """The greedy check of one pair: plain and assisted outputs identical (None without greedy rows)."""
    greedy = g[g["decoding"].astype(str) == "greedy"]
    if not len(greedy):
        return None
    same = greedy["outputs_identical"].astype(bool)
    return {"greedy_prompts": int(len(greedy)), "identical": int(same.sum()), "all_identical": bool(same.all())}


def _mix_summary(g) -> dict:
    """Per mix of one pair: mean speed-up, pooled tokens/s of both runs and their ratio."""
    import pandas as pd

    num = lambda frame, col: pd.to_numeric(frame[col], errors="coerce")  # noqa: E731
    out = {}
    for mix, gm in g.groupby("mix", sort=False):
        tok_plain = num(gm, "new_tokens_plain").sum() / num(gm, "time_plain_s").sum()
        tok_spec = num(gm, "new_tokens").sum() / num(gm, "time_assisted_s").sum()
        out[str(mix)] = {
            "n": int(len(gm)), "speedup_mean": float(num(gm, "speedup_measured").mean()),
            "tokens_per_s_plain": float(tok_plain), "tokens_per_s_assisted": float(tok_spec),
            "speedup_pooled": float(tok_spec / tok_plain) if tok_plain > 0 else float("nan")}
    return out


def disparity_summary(measured, statuses: dict, n_boot: int, seed: int) -> dict:
    """``disparity.json``'s content from the measured rows of every cell (see :func:`collect`)."""
    result: dict[str, Any]
    if measured.empty:
        result = {"value": "speedup_measured", "by": "task", "groups": {}, "note": "no cell was measured"}
    else:
        result = disparity(per_prompt(measured), "speedup_measured", "task", n_boot=n_boot, seed=seed)
    result["scope"] = POOLED_SCOPE
    result["cell_status"] = statuses
    result["by_pair"], result["by_cell"], result["mix"], result["invariance"] = {}, {}, {}, {}
    for pair, g in measured.groupby("pair", sort=False):
        result["by_pair"][str(pair)] = _pair_entry(g, n_boot, seed)
        invariance = _invariance(g)
        if invariance is not None:
            result["invariance"][str(pair)] = invariance
        mixes = _mix_summary(g)
        if mixes:
            result["mix"][str(pair)] = mixes
    for cid, g in measured.groupby("cell_id", sort=False):
        d = disparity(g, "speedup_measured", "task", n_boot=n_boot, seed=seed)
        result["by_cell"][str(cid)] = {k: d[k] for k in BY_CELL_KEYS}
    return result


def collect(cfg, tables: list, out_dir, *, n_boot: int | None = None) -> dict:
    """Concatenate cell tables into ``specdec.parquet`` / ``specdec_steps.parquet`` and write ``disparity.json``.

    ``specdec.parquet`` gains ``speedup_predicted_block`` (:func:`predicted_speedup_block`).
    ``disparity.json``: the top level is :func:`disparity` of ``speedup_measured`` by task over every measured
    row (all cells pooled, which is what the report's per-task rows show); ``by_pair`` holds the same per pair
    (speed-up and acceptance ``alpha_empirical``) and per-task means of the measured and predicted quantities
    (``per_task``), ``by_cell`` per cell, ``mix`` the mean speed-up and tokens/s per
    (pair, mix), and ``invariance`` the greedy check (plain and assisted outputs identical) per pair.
    """
    import pandas as pd

    from reprogrid.io import write_json, write_parquet

    n_boot = int(n_boot or study_settings(cfg)["bootstrap"])
    seed = study_seed(cfg)
    frames, step_frames, statuses = _read_cells(tables)
    df = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    df["speedup_predicted_block"] = predicted_speedup_block(df)
    steps = pd.concat(step_frames, ignore_index=True) if step_frames else pd.DataFrame(columns=["cell_id", *STEP_COLUMNS])
    out = Path(out_dir)
    write_parquet(df, out / "specdec.parquet")
    write_parquet(steps, out / "specdec_steps.parquet")
    measured = df[df["status"].astype(str) == "ok"] if "status" in df.columns else df
    result = disparity_summary(measured, statuses, n_boot, seed)
    write_json(out / "disparity.json", result)
    return result


# ------------------------------------------------------------------------------------------------------------------
# Attribution of the spread to the study's factors


def _response_rows(df, candidates: list[str]):
    """The first candidate column with a finite value, and the rows where it is finite (as float)."""
    import pandas as pd

    for col in candidates:
        vals = pd.to_numeric(df.get(col, pd.Series(dtype=float)), errors="coerce")
        finite = np.isfinite(vals.to_numpy(dtype=float))
        if finite.any():
            data = df[finite].copy()
            data[col] = vals[finite].astype(float)
            return col, data
    return candidates[0], df.iloc[0:0]


def _degenerate_reason(data, response: str, factors: list[str]) -> str | None:
    if data.empty:
        return f"no finite {response} values"
    if not factors:
        return "no study factor varies among the measured rows"
    if data[response].nunique() <= 1:
        return f"every row has the same {response}"
    return None


def _attribute_response(df, candidates: list[str], bootstrap: int, seed: int):
    """(table, details, summary) of one response: the attribution, or a residual-only table and the reason."""
    import pandas as pd

    from reprogrid.attribution import COLUMNS, attribute, varying_factors

    response, data = _response_rows(df, candidates)
    data = data.copy()
    for f in STUDY_FACTORS:
        if f in data.columns:
            data[f] = data[f].astype(str)
    factors = varying_factors(data, [f for f in STUDY_FACTORS if f in data.columns]) if len(data) else []
    reason = _degenerate_reason(data, response, factors)
    if reason:
        table = pd.DataFrame([{c: np.nan for c in COLUMNS} | {"effect": f} for f in factors]
                             + [{c: np.nan for c in COLUMNS} | {"effect": "residual"}], columns=COLUMNS)
        details = {"degenerate": reason, "response": response, "factors": factors, "n_rows": int(len(data)),
                   "effects": []}
    else:
        res = attribute(data, response, factors, item="prompt_id", bootstrap=bootstrap, seed=seed)
        table = res.table
        details = {**res.to_json_obj(), "response": response, "factors": factors, "item": "prompt_id",
                   "n_rows": int(len(data))}
    return table, details, {"response": response, "factors": factors, "degenerate": reason}


def attribute_study(table, out_dir, *, bootstrap: int = 200, seed: int = 0) -> dict:
    """Attribute speed-up and acceptance spread to the study's factors with reprogrid's attribution engine.

    Writes ``attribution_speedup.{csv,json}`` (response ``speedup_measured``) and ``attribution_acceptance.{csv,json}``
    (``alpha_empirical``; ``acceptance_rate_tokens`` when no row has it, e.g. vLLM cells). Factors: those of
    ``STUDY_FACTORS`` that vary among measured rows; item: ``prompt_id`` (prompts are crossed with every cell factor
    and nested in task). A response with nothing to attribute gets a residual-only table and the reason.
    """
    import pandas as pd

    from reprogrid.io import read_table, write_json, write_text

    df = read_table(table) if not isinstance(table, pd.DataFrame) else table
    if "status" in df.columns:
        df = df[df["status"].astype(str) == "ok"]
    out = Path(out_dir)
    summary = {}
    for name, candidates in (("speedup", ["speedup_measured"]),
                             ("acceptance", ["alpha_empirical", "acceptance_rate_tokens"])):
        table_out, details, summary[name] = _attribute_response(df, candidates, bootstrap, seed)
        write_text(out / f"attribution_{name}.csv",
                   table_out.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
        write_json(out / f"attribution_{name}.json", details)
    return summary
