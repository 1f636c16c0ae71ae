"""One measurement condition over many prompts: every prompt measured with :func:`measure_assisted`, one table
row per prompt (``STUDY_COLUMNS``) and one step row per verifier step (``STEP_COLUMNS``)."""

from __future__ import annotations

import logging

from reprogrid.errors import UserError
from reprogrid.specdec.measure import measure_assisted
from reprogrid.specdec.pairs import check_pair
from reprogrid.specdec.prompts import encode_prompt, validate_prompts, workload_order
from reprogrid.specdec.theory import check_gamma, summarize_steps

log = logging.getLogger(__name__)

DECODINGS = ("greedy", "sample")
STUDY_COLUMNS = [
    "task", "prompt_id", "position", "mix", "gamma", "decoding", "temperature", "drafter_temperature",
    "drafter_warpers", "seed",
    "prompt_tokens", "new_tokens", "new_tokens_plain", "n_steps",
    "alpha_analytic", "alpha_greedy", "alpha_empirical",
    "tokens_per_step", "tokens_per_full_step", "tokens_per_step_replayed",
    "expected_tokens_per_step", "expected_tokens_per_step_greedy",
    "c", "verify_cost_ratio", "speedup_measured", "speedup_predicted", "speedup_predicted_greedy",
    "cross_entropy", "kl", "outputs_identical", "replay_matches_observed", "ended_at_eos",
    "time_plain_s", "time_assisted_s", "time_draft_step_s", "time_verify_step_s", "time_verify_block_s",
    "output_text",
]
STEP_COLUMNS = ["task", "prompt_id", "position", "step", "drafted", "accepted"]
# measure_assisted's keys copied into a row as they are
_MEASURED = ("gamma", "decoding", "temperature", "drafter_temperature", "drafter_warpers", "seed", "prompt_tokens",
             "new_tokens", "new_tokens_plain", "n_steps", "alpha_empirical", "tokens_per_step", "tokens_per_full_step",
             "expected_tokens_per_step", "expected_tokens_per_step_greedy", "c", "verify_cost_ratio",
             "speedup_measured", "speedup_predicted", "speedup_predicted_greedy", "outputs_identical",
             "replay_matches_observed", "ended_at_eos", "time_plain_s", "time_assisted_s", "time_draft_step_s",
             "time_verify_step_s", "time_verify_block_s")


def study_row(prompt: dict, m: dict, tokenizer, position: int, mix: str | None) -> dict:
    """The table row (``STUDY_COLUMNS``) of one prompt's :func:`measure_assisted` result."""
    an = m["analytic"] or {}
    replay = m["steps_replayed"]
    row = {"task": prompt["task"], "prompt_id": prompt["prompt_id"], "position": position, "mix": mix or "as_given",
           **{k: m[k] for k in _MEASURED},
           "alpha_analytic": an.get("alpha", float("nan")), "alpha_greedy": an.get("alpha_greedy", float("nan")),
           "tokens_per_step_replayed": (summarize_steps(replay, m["gamma"])["tokens_per_step"] if replay
                                        else float("nan")),
           "cross_entropy": an.get("cross_entropy", float("nan")), "kl": an.get("kl", float("nan")),
           "output_text": (tokenizer.decode(m["plain_ids"], skip_special_tokens=False) if tokenizer is not None
                           else "")}
    return {c: row[c] for c in STUDY_COLUMNS}


def step_rows(prompt: dict, steps: list[tuple[int, int]]) -> list[dict]:
    """One row (``STEP_COLUMNS``) per recorded verifier step of one prompt."""
    return [{"task": prompt["task"], "prompt_id": prompt["prompt_id"], "position": prompt["position"], "step": i,
             "drafted": d, "accepted": a} for i, (d, a) in enumerate(steps)]


def run_study(verifier, drafter, tokenizer, prompts: list[dict], *, gamma: int = 4, max_new_tokens: int = 64,
              decoding: str = "greedy", temperature: float | None = None, seed: int = 0,
              chat_template: bool = False, mix: str | None = None, warmup: bool = True,
              timing_steps: int = 8, stop_at_eos: bool = True, drafter_warpers_mode: str = "once",
              return_steps: bool = False):
    """Measure every prompt; one row per (task, prompt) with the columns in ``STUDY_COLUMNS``.

    ``mix`` (None keeps the given order) reorders prompts with :func:`workload_order`. ``warmup`` runs one short
    plain and assisted generation first so the first timed prompt does not pay one-time costs. With
    ``return_steps`` a second DataFrame (task, prompt_id, position, step, drafted, accepted) is returned too.
    """
    import pandas as pd

    if decoding not in DECODINGS:
        raise UserError(f"must be one of {', '.join(DECODINGS)}, got {decoding!r}", field="decoding")
    gamma = check_gamma(gamma)
    validate_prompts(prompts)
    check_pair(verifier, drafter)
    ordered = workload_order(prompts, mix) if mix is not None else [
        {**p, "position": i, "mix": None} for i, p in enumerate(prompts)]
    do_sample = decoding == "sample"
    encoded = [encode_prompt(tokenizer, p, chat_template) for p in ordered]
    if warmup:
        measure_assisted(verifier, drafter, tokenizer, encoded[0], gamma, min(4, max_new_tokens), do_sample,
                         temperature, seed, timing_steps=1, analytic=False, drafter_warpers_mode=drafter_warpers_mode)
    rows, steps = [], []
    for p, ids in zip(ordered, encoded):
        m = measure_assisted(verifier, drafter, tokenizer, ids, gamma, max_new_tokens, do_sample, temperature, seed,
                             timing_steps=timing_steps, stop_at_eos=stop_at_eos,
                             drafter_warpers_mode=drafter_warpers_mode)
        rows.append(study_row(p, m, tokenizer, p["position"], mix))
        steps += step_rows(p, m["steps"])
        log.info("specdec %s/%s: %d tokens, %.2f tokens/step, speed-up %.2f", p["task"], p["prompt_id"],
                 m["new_tokens"], m["tokens_per_step"], m["speedup_measured"])
    df = pd.DataFrame(rows, columns=STUDY_COLUMNS)
    if return_steps:
        return df, pd.DataFrame(steps, columns=STEP_COLUMNS)
    return df
