"""One measurement cell of the configured study (the workflow's per-cell job, ``reprogrid specdec run``):
transformers' assisted generation or vLLM's draft-model method -> ``<cell>.parquet``, ``<cell>.steps.parquet``
and ``<cell>.json``."""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

from reprogrid.errors import UserError
from reprogrid.specdec.cells import CELL_COLUMNS, raw_config, study_cells, study_seed, study_settings
from reprogrid.specdec.pairs import pair_problem, require_model_dir
from reprogrid.specdec.prompts import encode_prompt, study_prompts, workload_order
from reprogrid.specdec.study import STEP_COLUMNS, STUDY_COLUMNS, run_study

NAN = float("nan")


def _empty_tables():
    import pandas as pd

    return pd.DataFrame(columns=STUDY_COLUMNS), pd.DataFrame(columns=STEP_COLUMNS)


def _acceptance_rates(df, steps) -> list[float]:
    """Accepted / drafted draft tokens per prompt from the step rows (else the table's own column, else NaN)."""
    rate = []
    for _, r in df.iterrows():
        if steps is not None and len(steps):
            s = steps[(steps["task"] == r["task"]) & (steps["prompt_id"] == r["prompt_id"])]
            drafted = float(s["drafted"].sum())
            rate.append(float(s["accepted"].sum()) / drafted if drafted > 0 else NAN)
        else:
            rate.append(r.get("acceptance_rate_tokens", NAN) if "acceptance_rate_tokens" in df.columns else NAN)
    return rate


def with_cell_columns(df, cell: dict, status: str, steps=None):
    """Prefix the cell's factor columns; ``acceptance_rate_tokens`` = accepted / drafted draft tokens per prompt."""
    import pandas as pd

    df = df.copy()
    rate = _acceptance_rates(df, steps)
    values = {"cell_id": cell["cell_id"], "pair": cell["pair"], "verifier": cell["verifier"],
              "drafter": cell["drafter"], "verifier_quantization": cell["verifier_quantization"],
              "drafter_quantization": cell["drafter_quantization"], "chat_template": cell["chat_template"],
              "backend": cell["backend"], "status": status}
    front = pd.DataFrame({k: pd.Series([v] * len(df), index=df.index, dtype=object) for k, v in values.items()})
    front["acceptance_rate_tokens"] = pd.Series(rate, index=df.index, dtype=float)
    rest = df.drop(columns=[c for c in CELL_COLUMNS if c in df.columns])
    return pd.concat([front, rest], axis=1)


# ------------------------------------------------------------------------------------------------------------------
# vLLM (pragma: no cover - needs a CUDA GPU and vllm, pip install 'reprogrid[gpu]')


def _vllm_counters(llm) -> dict:  # pragma: no cover
    out = {"num_drafts": 0.0, "num_draft_tokens": 0.0, "num_accepted_tokens": 0.0}
    for m in llm.get_metrics():
        name = m.name.removesuffix("_total")
        for key in out:
            if name == f"vllm:spec_decode_{key}":
                out[key] += float(getattr(m, "value", 0.0) or 0.0)
    return out


def _vllm_generate(llm, ids, params) -> tuple[list[int], float]:  # pragma: no cover
    t0 = time.perf_counter()
    res = llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)
    return list(res[0].outputs[0].token_ids), time.perf_counter() - t0


def _vllm_row(cell: dict, p: dict, ids, plain: tuple, spec: tuple, d: dict, seed: int, tok) -> dict:  # pragma: no cover
    """One study row from the plain and speculative outputs ((ids, seconds)) and the counter deltas ``d``."""
    (p_ids, t_plain), (a_ids, t_spec) = plain, spec
    rate_plain, rate_spec = len(p_ids) / t_plain, len(a_ids) / t_spec
    return {**{c: NAN for c in STUDY_COLUMNS},
            "task": p["task"], "prompt_id": p["prompt_id"], "position": p["position"], "mix": cell["mix"],
            "gamma": cell["gamma"], "decoding": cell["decoding"], "temperature": cell["temperature"],
            "drafter_temperature": cell["temperature"], "drafter_warpers": "vllm", "seed": int(seed),
            "prompt_tokens": len(ids), "new_tokens": len(a_ids), "new_tokens_plain": len(p_ids),
            "n_steps": int(d["num_drafts"]),
            "tokens_per_step": (1 + d["num_accepted_tokens"] / d["num_drafts"]) if d["num_drafts"] else NAN,
            "speedup_measured": rate_spec / rate_plain if rate_plain > 0 else NAN,
            "outputs_identical": (p_ids == a_ids) if cell["decoding"] == "greedy" else None, "ended_at_eos": None,
            "replay_matches_observed": None, "time_plain_s": t_plain, "time_assisted_s": t_spec,
            "output_text": tok.decode(p_ids), "acceptance_rate_tokens":
                d["num_accepted_tokens"] / d["num_draft_tokens"] if d["num_draft_tokens"] else NAN}


def measure_vllm(cell: dict, settings: dict, prompts: list[dict], verifier_dir: Path, drafter_dir: Path,
                 seed: int):  # pragma: no cover - needs a CUDA GPU and vllm (pip install 'reprogrid[gpu]')
    """vLLM's draft-model method: plain vs speculative engine, one prompt at a time, counters per prompt.

    Not run on this project's CPU machines (vLLM has no speculative decoding on its CPU runner). Per prompt:
    wall time of ``llm.generate`` for the plain and the speculative engine (batch size 1, same token ids), and the
    deltas of vLLM's counters ``spec_decode_num_drafts`` / ``_num_draft_tokens`` / ``_num_accepted_tokens``.
    ``acceptance_rate_tokens`` = accepted / draft tokens (vLLM's definition); ``alpha_empirical``, the analytic
    columns and ``c`` are NaN (no per-step records, no logits).
    """
    import pandas as pd

    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise UserError("backend vllm needs vllm on a CUDA machine (pip install 'reprogrid[gpu]')",
                        field="specdec.backend") from None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(verifier_dir)
    ordered = workload_order(prompts, cell["mix"])
    token_ids = [encode_prompt(tok, p, cell["chat_template"])[0].tolist() for p in ordered]
    greedy = cell["decoding"] == "greedy"
    params = SamplingParams(max_tokens=int(settings["max_new_tokens"]), temperature=0.0 if greedy else
                            float(cell["temperature"]), seed=int(seed))
    common = dict(dtype=settings["dtype"], seed=int(seed), gpu_memory_utilization=0.4, enforce_eager=False,
                  disable_log_stats=False)
    plain = LLM(model=str(verifier_dir), **common)
    _vllm_generate(plain, token_ids[0][:8], params)  # warm-up
    plain_out = [_vllm_generate(plain, ids, params) for ids in token_ids]
    spec = LLM(model=str(verifier_dir), speculative_config={
        "method": "draft_model", "model": str(drafter_dir), "num_speculative_tokens": int(cell["gamma"])}, **common)
    _vllm_generate(spec, token_ids[0][:8], params)
    rows = []
    for p, ids, plain_result in zip(ordered, token_ids, plain_out):
        before = _vllm_counters(spec)
        spec_result = _vllm_generate(spec, ids, params)
        after = _vllm_counters(spec)
        delta = {k: after[k] - before[k] for k in after}
        rows.append(_vllm_row(cell, p, ids, plain_result, spec_result, delta, seed, tok))
    df = pd.DataFrame(rows, columns=[*STUDY_COLUMNS, "acceptance_rate_tokens"])
    return df, pd.DataFrame(columns=STEP_COLUMNS)


# ------------------------------------------------------------------------------------------------------------------
# transformers, and the cell job


def _measure_hf(cfg, c: dict, s: dict, prompts: list[dict], verifier_dir: Path, drafter_dir: Path, seed: int, *,
                threads: int | None, log):
    """Load the prepared pair on its devices and run the cell's condition over every prompt (transformers)."""
    import torch

    from reprogrid.models import load_prepared

    models = raw_config(cfg)["models"]
    if threads:
        torch.set_num_threads(int(threads))
    log(f"[specdec] {c['cell_id']}: loading {verifier_dir.name} and {drafter_dir.name}")
    verifier, tok = load_prepared(verifier_dir, dtype=s["dtype"], quantization=c["verifier_quantization"],
                                  device=models[c["verifier"]].get("device", "cpu"))
    drafter, _ = load_prepared(drafter_dir, dtype=s["dtype"], quantization=c["drafter_quantization"],
                               device=models[c["drafter"]].get("device", "cpu"))
    return run_study(verifier, drafter, tok, prompts, gamma=c["gamma"], max_new_tokens=s["max_new_tokens"],
                     decoding=c["decoding"], temperature=c["temperature"], seed=seed,
                     chat_template=c["chat_template"], mix=c["mix"], timing_steps=s["timing_steps"],
                     stop_at_eos=True, drafter_warpers_mode=s["drafter_warpers"], return_steps=True)


def _cell_meta(cfg, c: dict, s: dict, table, prompts: list[dict], status: str, seed: int, verifier_dir: Path,
               drafter_dir: Path, t0: float) -> dict:
    """The cell's ``<cell>.json``: its factors, status, settings, inputs, wall time and software versions."""
    from reprogrid.io import short_hash

    meta = {
        **{k: v for k, v in c.items()}, "status": status, "n_prompts": len(table),
        "prompts_hash": short_hash(prompts), "tasks": s["tasks"], "prompts_per_task": s["prompts_per_task"],
        "max_new_tokens": s["max_new_tokens"], "dtype": s["dtype"], "timing_steps": s["timing_steps"],
        "drafter_warpers": s["drafter_warpers"], "seed": seed, "verifier_dir": str(verifier_dir),
        "drafter_dir": str(drafter_dir), "wall_s": round(time.perf_counter() - t0, 2),
        "outputs_identical_all": (bool(table["outputs_identical"].astype(bool).all())
                                  if c["decoding"] == "greedy" and len(table) else None),
        "python": sys.version.split()[0], "machine": platform.machine(), "config_sha256": getattr(cfg, "sha256", None),
    }
    try:
        import torch
        import transformers

        meta.update(torch=torch.__version__, transformers=transformers.__version__, threads=torch.get_num_threads())
    except ImportError:  # pragma: no cover
        pass
    return meta


def run_cell(cfg, cell: str, verifier_dir, drafter_dir, out_dir, *, threads: int | None = None,
             log=lambda m: None) -> dict:
    """Measure one cell of the configured study; write ``<cell>.parquet``, ``<cell>.steps.parquet``, ``<cell>.json``.

    ``verifier_dir`` / ``drafter_dir``: prepared model directories (``reprogrid prepare-model``) of the pair's
    (model, quantization). A pair that transformers would run on its different-tokenizer path is refused, or
    written as an empty cell with status ``skipped: ...`` when the pair says ``on_vocab_mismatch: skip``.
    Returns the cell's metadata (also written to the JSON file).
    """
    from reprogrid.io import write_json, write_parquet

    cells = study_cells(cfg)
    if cell not in cells:
        raise UserError(f"unknown cell '{cell}'; the config has: {', '.join(cells)}", field="--cell")
    c = cells[cell]
    s = study_settings(cfg)
    prompts = study_prompts(s)
    verifier_dir = require_model_dir(verifier_dir, "--verifier-dir", "prepared")
    drafter_dir = require_model_dir(drafter_dir, "--drafter-dir", "prepared")
    out_dir = Path(out_dir)
    seed = study_seed(cfg)
    t0 = time.perf_counter()
    status = "ok"
    problem = pair_problem(verifier_dir, drafter_dir)
    if problem is not None:
        if c["on_vocab_mismatch"] != "skip":
            raise UserError(problem + f"; set on_vocab_mismatch: skip on pair '{c['pair']}' to record it as "
                            "not measured", field=f"specdec.pairs[{c['pair']}]")
        status = f"skipped: {problem}"
        df, steps = _empty_tables()
        log(f"[specdec] {cell}: {status}")
    elif c["backend"] == "vllm":
        df, steps = measure_vllm(c, s, prompts, verifier_dir, drafter_dir, seed)
    else:
        df, steps = _measure_hf(cfg, c, s, prompts, verifier_dir, drafter_dir, seed, threads=threads, log=log)
    table = with_cell_columns(df, c, status, steps if c["backend"] == "hf" else None)
    steps = steps.copy()
    steps.insert(0, "cell_id", cell)
    write_parquet(table, out_dir / f"{cell}.parquet")
    write_parquet(steps, out_dir / f"{cell}.steps.parquet")
    meta = _cell_meta(cfg, c, s, table, prompts, status, seed, verifier_dir, drafter_dir, t0)
    write_json(out_dir / f"{cell}.json", meta)
    return meta
