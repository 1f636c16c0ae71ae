"""Plain verifier generation vs instrumented assisted generation on one prompt (definitions: the package
docstring; the transformers behaviours worked around: :mod:`reprogrid.specdec.hooks`)."""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from reprogrid.specdec.acceptance import analytic_acceptance, as_2d
from reprogrid.specdec.hooks import (drafter_warpers, eos_ids, fixed_draft_length, generation_kwargs,
                                     record_verifier_steps, special_tokens)
from reprogrid.specdec.pairs import check_pair
from reprogrid.specdec.theory import (check_gamma, check_max_new_tokens, check_temperature, expected_speedup,
                                      expected_tokens_per_step, replay_greedy_steps, summarize_steps)

NAN = float("nan")


def decode_step_time(model, prompt_ids, n_steps: int, block: int = 1) -> float:
    """Median seconds of one cached forward pass over ``block`` new tokens after prefilling the prompt."""
    import torch

    with torch.inference_mode():
        out = model(prompt_ids.to(model.device), use_cache=True)
        cache = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
        times = []
        for _ in range(n_steps):
            tokens = nxt.repeat(1, block)
            t0 = time.perf_counter()
            out = model(tokens, past_key_values=cache, use_cache=True)
            times.append(time.perf_counter() - t0)
            nxt = out.logits[:, -1:].argmax(-1)
    return float(statistics.median(times))


def timed_generate(model, prompt_ids, seed: int, **kw) -> tuple[list[int], float]:
    """New token ids of one seeded ``model.generate`` call, and its wall time in seconds."""
    import torch

    attention_mask = torch.ones_like(prompt_ids)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(prompt_ids, attention_mask=attention_mask, **kw)
    elapsed = time.perf_counter() - t0
    return out[0, prompt_ids.shape[1]:].tolist(), elapsed


def _rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else NAN


def _plain_and_assisted(verifier, drafter, prompt, kw: dict, gamma: int, seed: int, warpers_mode: str) -> dict:
    """Plain then assisted generation (same seed), with the verifier steps of the assisted run recorded."""
    with special_tokens([verifier, drafter], kw["eos_token_id"], kw["pad_token_id"]):
        plain_ids, t_plain = timed_generate(verifier, prompt, seed, **kw)
        with fixed_draft_length(drafter, gamma), drafter_warpers(verifier, warpers_mode) as warp, \
                record_verifier_steps(verifier) as steps:
            assisted_ids, t_assisted = timed_generate(verifier, prompt, seed, assistant_model=drafter, **kw)
    return {"plain_ids": plain_ids, "t_plain": t_plain, "assisted_ids": assisted_ids, "t_assisted": t_assisted,
            "steps": list(steps), "extra_temperature": warp["extra_temperature"]}


def _step_times(verifier, drafter, prompt, gamma: int, timing_steps: int) -> dict:
    """Decode step times of both models, c and the verify cost ratio (the columns of the study table)."""
    t_draft = decode_step_time(drafter, prompt, timing_steps)
    t_verify = decode_step_time(verifier, prompt, timing_steps)
    t_block = decode_step_time(verifier, prompt, timing_steps, block=gamma + 1)
    return {"time_draft_step_s": t_draft, "time_verify_step_s": t_verify, "time_verify_block_s": t_block,
            "c": t_draft / t_verify if t_verify > 0 else NAN,
            "verify_cost_ratio": t_block / t_verify if t_verify > 0 else NAN}


def _predictions(result: dict, an: dict, gamma: int, max_new_tokens: int, do_sample: bool) -> dict:
    """E and the predicted speed-ups from the analytic acceptance, and (greedy) the replay of the steps."""
    out: dict[str, Any] = {
        "analytic": an,
        "expected_tokens_per_step": expected_tokens_per_step(an["alpha"], gamma),
        "expected_tokens_per_step_greedy": expected_tokens_per_step(an["alpha_greedy"], gamma),
    }
    if math.isfinite(result["c"]):
        out["speedup_predicted"] = expected_speedup(an["alpha"], gamma, result["c"])
        out["speedup_predicted_greedy"] = expected_speedup(an["alpha_greedy"], gamma, result["c"])
    if not do_sample:
        replay = replay_greedy_steps(an["matches"], gamma, max_new_tokens)
        out["steps_replayed"] = replay
        out["replay_matches_observed"] = [a for _, a in replay] == [a for _, a in result["steps"]]
    return out


def measure_assisted(verifier, drafter, tokenizer, prompt_ids, gamma: int, max_new_tokens: int,
                     do_sample: bool = False, temperature: float | None = None, seed: int = 0, *,
                     timing_steps: int = 8, stop_at_eos: bool = True, analytic: bool = True,
                     drafter_warpers_mode: str = "once") -> dict:
    """Plain verifier generation vs assisted generation with a fixed draft length, on one prompt.

    Runs, in this order and seeded with ``seed`` each: plain ``verifier.generate``; assisted generation with
    ``drafter`` at constant draft length ``gamma`` while recording every verifier step; then times
    ``timing_steps`` cached decode steps of each model on the prompt to estimate c; then (``analytic``)
    teacher-forces the plain output through both models. Greedy acceptance is argmax matching; ``do_sample``
    runs exact speculative sampling at ``temperature`` (default 1) with top-k/top-p disabled, and
    ``drafter_warpers_mode`` picks the drafter's temperature handling
    (:func:`reprogrid.specdec.hooks.drafter_warpers`; ``once`` = textbook). The checkpoint's own generation
    settings (repetition penalty, top-p, ...) are overridden so both runs are pure greedy or pure sampling.
    ``stop_at_eos=False`` gives fixed-length outputs.

    Returns a dict with ``plain_ids`` / ``assisted_ids`` (new tokens), ``steps`` [(drafted, accepted)], the
    :func:`summarize_steps` fields, ``time_plain_s``, ``time_assisted_s``, ``speedup_measured`` (throughput
    ratio, = time ratio when both runs produce the same number of tokens), ``c``, ``verify_cost_ratio``,
    ``analytic`` (the :func:`analytic_acceptance` dict or None), ``expected_tokens_per_step``,
    ``expected_tokens_per_step_greedy``, ``speedup_predicted`` (from alpha_analytic),
    ``speedup_predicted_greedy`` (from alpha_greedy), ``steps_replayed`` (:func:`replay_greedy_steps` on the
    teacher-forced matches) and ``replay_matches_observed`` (its accepted counts equal the recorded ones; greedy
    only), ``ended_at_eos`` and ``outputs_identical`` (greedy only; None under sampling).
    """
    gamma = check_gamma(gamma)
    check_max_new_tokens(max_new_tokens)
    if temperature is not None:
        check_temperature(temperature)
    check_pair(verifier, drafter)
    prompt = as_2d(prompt_ids, "prompt_ids").to(verifier.device)
    kw = generation_kwargs(verifier, tokenizer, max_new_tokens, do_sample, temperature, stop_at_eos)
    run = _plain_and_assisted(verifier, drafter, prompt, kw, gamma, seed, drafter_warpers_mode)
    plain_ids, assisted_ids, steps = run["plain_ids"], run["assisted_ids"], run["steps"]
    t_verifier = float(temperature) if (do_sample and temperature is not None) else 1.0
    t_drafter = t_verifier * run["extra_temperature"] if do_sample else 1.0
    times = _step_times(verifier, drafter, prompt, gamma, timing_steps)
    ended_at_eos = bool(assisted_ids) and assisted_ids[-1] in eos_ids(kw.get("eos_token_id"))
    rate_plain, rate_assisted = _rate(len(plain_ids), run["t_plain"]), _rate(len(assisted_ids), run["t_assisted"])
    result: dict[str, Any] = {
        "gamma": gamma, "decoding": "sample" if do_sample else "greedy",
        "temperature": t_verifier if do_sample else None, "drafter_temperature": t_drafter if do_sample else None,
        "drafter_warpers": drafter_warpers_mode, "seed": int(seed), "prompt_tokens": int(prompt.shape[1]),
        "plain_ids": plain_ids, "assisted_ids": assisted_ids,
        "new_tokens": len(assisted_ids), "new_tokens_plain": len(plain_ids), "steps": steps,
        **summarize_steps(steps, gamma, last_censored=ended_at_eos),
        "time_plain_s": run["t_plain"], "time_assisted_s": run["t_assisted"],
        "tokens_per_s_plain": rate_plain, "tokens_per_s_assisted": rate_assisted,
        "speedup_measured": rate_assisted / rate_plain if rate_plain > 0 else NAN,
        **times,
        "ended_at_eos": ended_at_eos,
        "outputs_identical": (plain_ids == assisted_ids) if not do_sample else None,
        "analytic": None, "steps_replayed": None, "replay_matches_observed": None,
        "expected_tokens_per_step": NAN, "expected_tokens_per_step_greedy": NAN,
        "speedup_predicted": NAN, "speedup_predicted_greedy": NAN,
    }
    if analytic and plain_ids:
        an = analytic_acceptance(verifier, drafter, prompt, plain_ids, temperature=t_verifier,
                                 drafter_temperature=t_drafter,
                                 vocab_size=len(tokenizer) if tokenizer is not None else None)
        result.update(_predictions(result, an, gamma, max_new_tokens, do_sample))
    return result
