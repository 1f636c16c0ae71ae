"""Speculative decoding measurements: theory, analytic acceptance, instrumented assisted generation.

Quantities (p = verifier, q = drafter, s = prefix, gamma = draft length per verifier step):

* ``alpha_analytic``: mean over positions of alpha(s) = sum_x min(p(x|s), q(x|s)) (Leviathan et al. 2023;
  Sandler et al. 2025 eq. for per-prefix acceptance), with softmax at the decoding temperature (1 for greedy).
  It is the acceptance probability of exact speculative *sampling*.
* ``alpha_greedy``: fraction of positions where argmax q == argmax p. Under greedy decoding this, not
  ``alpha_analytic``, is the acceptance rule transformers applies.
* ``alpha_empirical``: A / (A + R) from the instrumented run: A = accepted draft tokens over all verifier
  steps, R = verifier steps that ended with a rejection (accepted < drafted). This is the maximum-likelihood
  estimate of a constant per-token acceptance probability when each step is a geometric run censored at
  the draft length (steps that accept every draft token contribute accepts but no observed rejection).
  Steps that drafted nothing (the last token before ``max_new_tokens``) carry no information and are skipped.
* ``tokens_per_step``: new tokens / verifier steps (what Spec-Bench calls mean accepted tokens per step).
  ``tokens_per_full_step`` restricts to steps that drafted the full gamma (the quantity E models).
* ``expected_tokens_per_step`` E(alpha, gamma) = (1 - alpha^(gamma+1)) / (1 - alpha) (gamma + 1 at alpha 1).
* ``c`` = drafter single-token decode step time / verifier single-token decode step time (median over a few
  cached decode steps on the same prompt). Predicted speed-up = E / (gamma * c + 1). On CPU the verifier's
  gamma+1-token block costs more than one token; ``verify_cost_ratio`` (block time / single-token time) is
  reported so the reader can see how far the c-only model is from the hardware.

transformers 5.23 behaviours this module works around (both found while testing on tiny models):

* Assisted *sampling* applies the temperature twice to the drafter (q at T^2, p at T); an identical drafter is
  then rejected. ``drafter_warpers_mode="once"`` (default) restores the textbook algorithm; ``"library"``
  measures transformers as shipped, and the analytic alpha then uses the drafter's effective temperature.
* generate() infers an attention mask from pad tokens when the pad id is not an EOS id; inside assisted
  generation the drafter then masks every *generated* token equal to the pad id. The pad id is therefore set
  to an EOS id (or None for fixed-length runs) for the duration of a measurement.

Everything labelled "reprogrid's definition" below is this package's own choice: the fairness formula of
Sandler et al. (arXiv 2510.02128) is not public.

Workload mix: every prompt is measured on its own (batch size 1, fresh caches), so the mix factor only changes
the order in which prompts are run (``position``). Under greedy decoding acceptance is order-invariant by
construction; any effect of the mix is therefore on wall-clock state (CPU caches, allocator, frequency), not on
alignment. Effects of real multitask serving (cross-request batching, adaptive draft-length schedules carried
over between requests, online drafter updates) are not modelled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import statistics
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from reprogrid.errors import UserError

log = logging.getLogger(__name__)

DECODINGS = ("greedy", "sample")
MIXES = ("single", "interleaved")
CE_VARIANCE_LABEL = (
    "reprogrid's own definition: population variance (ddof=0) across groups of the per-group mean "
    "drafter-verifier cross-entropy H(p, q) in nats per token; not the formula of Sandler et al. (not public)"
)

# ------------------------------------------------------------------------------------------------------------------
# Theory


def _check_gamma(gamma: Any) -> int:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, np.integer)) or gamma < 1:
        raise UserError(f"must be an integer >= 1 (draft tokens per verifier step), got {gamma!r}", field="gamma")
    return int(gamma)


def _check_alpha(alpha: Any) -> np.ndarray:
    a = np.asarray(alpha, dtype=float)
    if not np.all(np.isfinite(a)) or np.any(a < 0) or np.any(a > 1):
        raise UserError(f"must lie in [0, 1], got {alpha!r}", field="alpha")
    return a


def _scalar(x: np.ndarray):
    return float(x) if np.ndim(x) == 0 else x


def expected_tokens_per_step(alpha, gamma: int):
    """Expected tokens per verifier step, (1 - alpha^(gamma+1)) / (1 - alpha); gamma + 1 at alpha = 1.

    Computed as sum_{k=0..gamma} alpha^k, which is the same value without the 0/0 at alpha = 1.
    Accepts a scalar or an array of alphas.
    """
    gamma = _check_gamma(gamma)
    a = _check_alpha(alpha)
    k = np.arange(gamma + 1)
    return _scalar(np.sum(np.power.outer(a, k), axis=-1))


def expected_speedup(alpha, gamma: int, c: float):
    """Expected wall-clock speed-up E(alpha, gamma) / (gamma * c + 1) (Leviathan et al. 2023, Theorem 3.8)."""
    c_arr = np.asarray(c, dtype=float)
    if not np.all(np.isfinite(c_arr)) or np.any(c_arr < 0):
        raise UserError(f"must be a finite number >= 0 (drafter/verifier step-time ratio), got {c!r}", field="c")
    return _scalar(np.asarray(expected_tokens_per_step(alpha, gamma)) / (gamma * c_arr + 1.0))


def replay_greedy_steps(matches: Iterable[bool], gamma: int,
                        max_new_tokens: int | None = None) -> list[tuple[int, int]]:
    """The (drafted, accepted) steps greedy assisted generation produces, given per-position argmax matches.

    ``matches[i]`` says whether drafter and verifier argmax agree at the prefix ending just before continuation
    token i, on the verifier's greedy path (``analytic_acceptance(...)["matches"]``). Under greedy decoding every
    accepted prefix is that path, so draft token j of a step is conditioned on the path as long as all earlier
    drafts matched: the accepted count of a step starting at position t is the run of consecutive matches from
    t, capped at the draft length min(gamma, max_new_tokens - t - 1) (transformers keeps one slot for the
    verifier's bonus token). If the continuation is shorter than ``max_new_tokens`` it ended at EOS, and
    transformers crops a step at the EOS: accepted <= len(matches) - t - 1.

    ``drafted`` is the nominal draft length; the real one is shorter when the drafter itself emits EOS inside a
    draft (unknowable from teacher forcing after a mismatch), so compare accepted counts.
    """
    gamma = _check_gamma(gamma)
    m = [bool(x) for x in matches]
    n = len(m)
    cap = n if max_new_tokens is None else int(max_new_tokens)
    if cap < n:
        raise UserError(f"max_new_tokens {cap} < continuation length {n}", field="max_new_tokens")
    steps = []
    t = 0
    while t < n:
        drafted = max(0, min(gamma, cap - t - 1))
        run = 0
        while run < drafted and t + run < n and m[t + run]:
            run += 1
        accepted = min(run, n - t - 1)
        steps.append((drafted, accepted))
        t += accepted + 1
    return steps


def summarize_steps(steps: list[tuple[int, int]], gamma: int, *, last_censored: bool = False) -> dict:
    """Acceptance summaries of a list of (drafted, accepted) verifier steps (see the module docstring).

    ``last_censored``: the final step ended at EOS, where transformers crops the accepted count at the EOS
    whether or not a draft token was rejected; that step is then left out of ``alpha_empirical`` (A and R),
    though it still counts in the tokens-per-step means.
    """
    informative = [(d, a) for d, a in (steps[:-1] if last_censored else steps) if d > 0]
    accepted = sum(a for _, a in informative)
    rejections = sum(1 for d, a in informative if a < d)
    full = [a + 1 for d, a in steps if d == gamma]
    return {
        "n_steps": len(steps),
        "drafted_total": sum(d for d, _ in steps),
        "accepted_total": sum(a for _, a in steps),
        "rejections": rejections,
        "alpha_empirical": accepted / (accepted + rejections) if accepted + rejections > 0 else float("nan"),
        "tokens_per_step": (sum(a + 1 for _, a in steps) / len(steps)) if steps else float("nan"),
        "tokens_per_full_step": (sum(full) / len(full)) if full else float("nan"),
        "n_full_steps": len(full),
    }


# ------------------------------------------------------------------------------------------------------------------
# Analytic acceptance (teacher-forced)


def _vocab_size(model) -> int:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(cfg.vocab_size)


def _shared_vocab(verifier, drafter, vocab_size: int | None) -> int:
    """Number of leading vocabulary rows to compare (handles padding of the LM head beyond the tokenizer)."""
    v, d = _vocab_size(verifier), _vocab_size(drafter)
    if v == d:
        return v  # same LM head size: compare in full, as transformers' assisted path does
    if vocab_size is None:
        raise UserError(
            f"verifier vocabulary {v} != drafter vocabulary {d}; pass the tokenizer size to compare the shared "
            "rows, or use models with one tokenizer", field="vocab")
    if vocab_size > min(v, d):
        raise UserError(
            f"verifier vocabulary {v} and drafter vocabulary {d} differ beyond padding (tokenizer has "
            f"{vocab_size} tokens): transformers would take the different-tokenizer (universal assisted "
            "decoding) path, which this study does not measure", field="vocab")
    return int(vocab_size)


def _as_2d(ids, name: str):
    import torch

    t = torch.as_tensor(ids, dtype=torch.long)
    if t.dim() == 1:
        t = t[None, :]
    if t.dim() != 2 or t.shape[0] != 1:
        raise UserError(f"expected one sequence of token ids (shape [n] or [1, n]), got shape {tuple(t.shape)}",
                        field=name)
    return t


def analytic_acceptance(verifier, drafter, input_ids, continuation_ids, *, temperature: float = 1.0,
                        drafter_temperature: float | None = None, vocab_size: int | None = None) -> dict:
    """Teacher-force prompt + continuation through both models (one forward pass each) and compare them.

    Positions are the ones that predict each continuation token. Per position: alpha = sum_x min(p, q),
    argmax match, H(p, q) = -sum p log q and KL(p || q) = H(p, q) - H(p), all in nats, with
    p = softmax(verifier logits / temperature), q = softmax(drafter logits / drafter_temperature) (default: the
    same temperature; see :func:`drafter_warpers` for why they can differ in transformers).

    Vocabulary: equal LM-head sizes are compared in full (as transformers does). Sizes that differ only by
    padding are compared on the first ``vocab_size`` rows (pass ``len(tokenizer)``), renormalised there; a
    difference beyond padding raises UserError.
    """
    import torch

    if drafter_temperature is None:
        drafter_temperature = temperature
    for name, value in (("temperature", temperature), ("drafter_temperature", drafter_temperature)):
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise UserError(f"must be a number > 0, got {value!r}", field=name)
    k = _shared_vocab(verifier, drafter, vocab_size)
    prompt = _as_2d(input_ids, "input_ids")
    cont = _as_2d(continuation_ids, "continuation_ids")
    n_prompt, n_cont = prompt.shape[1], cont.shape[1]
    if n_prompt < 1 or n_cont < 1:
        raise UserError("prompt and continuation must each hold at least one token", field="input_ids")
    seq = torch.cat([prompt, cont], dim=1)
    def _logits(model):
        kwargs = {}
        if getattr(model, "_supports_logits_to_keep", lambda: False)():
            kwargs["logits_to_keep"] = n_cont + 1  # skip the prompt's LM-head rows (vocab x prompt length)
        logits = model(seq.to(model.device), **kwargs).logits[0]
        return logits[logits.shape[0] - n_cont - 1: -1, :k]

    with torch.inference_mode():
        lv, ld = _logits(verifier), _logits(drafter)
        parts: dict[str, list] = {name: [] for name in ("alpha", "plogq", "plogp", "arg_p", "arg_q")}
        for lo in range(0, n_cont, 64):  # bound the vocab-sized temporaries (Qwen: 152k floats per position)
            v_chunk = lv[lo: lo + 64].float().cpu()
            d_chunk = ld[lo: lo + 64].float().cpu()
            logp = torch.log_softmax(v_chunk / temperature, dim=-1)
            logq = torch.log_softmax(d_chunk / drafter_temperature, dim=-1)
            p, q = logp.exp(), logq.exp()
            parts["alpha"].append(torch.minimum(p, q).sum(-1).clamp(max=1.0))
            # 0 * log 0 terms: p underflows to exactly 0 only where logp = -inf, so mask them.
            parts["plogq"].append(torch.where(p > 0, p * logq, torch.zeros_like(p)).sum(-1))
            parts["plogp"].append(torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1))
            parts["arg_p"].append(v_chunk.argmax(-1))
            parts["arg_q"].append(d_chunk.argmax(-1))
        alphas, plogq, plogp, arg_p, arg_q = (torch.cat(parts[n]) for n in ("alpha", "plogq", "plogp", "arg_p",
                                                                              "arg_q"))
        ce = -plogq
        kl = (plogp - plogq).clamp(min=0.0)
        matches = arg_p == arg_q
        on_path = arg_p == cont[0, :].cpu()
    return {
        "alpha": float(alphas.mean()),
        "alphas": alphas.tolist(),
        "alpha_greedy": float(matches.float().mean()),
        "matches": matches.tolist(),
        "cross_entropy": float(ce.mean()),
        "kl": float(kl.mean()),
        "verifier_entropy": float(-plogp.mean()),
        "continuation_is_verifier_argmax": float(on_path.float().mean()),
        "n_positions": int(n_cont),
        "vocab_compared": int(k),
        "temperature": float(temperature),
        "drafter_temperature": float(drafter_temperature),
    }


# ------------------------------------------------------------------------------------------------------------------
# Instrumented assisted generation


@contextlib.contextmanager
def record_verifier_steps(verifier) -> Iterator[list[tuple[int, int]]]:
    """Record (drafted, accepted) for every verifier step of assisted generation run on ``verifier``.

    transformers 5.23 calls ``candidate_generator.update_candidate_strategy(input_ids, new_logits, n_matches)``
    once per verifier step (generation/utils.py, ``_assisted_decoding``), with new_logits of shape
    [1, drafted + 1, vocab] and n_matches the accepted draft tokens (after EOS / length cropping). The hook wraps
    ``_get_candidate_generator`` on this model instance only and wraps the returned generator's method; both are
    restored on exit, so other models and threads are untouched.
    """
    steps: list[tuple[int, int]] = []
    had_own = "_get_candidate_generator" in vars(verifier)
    previous = vars(verifier).get("_get_candidate_generator")
    original = verifier._get_candidate_generator  # bound method (or a previous instance wrapper)

    def patched(*args, **kwargs):
        generator = original(*args, **kwargs)
        update = generator.update_candidate_strategy

        def recording_update(input_ids, scores, num_matches):
            steps.append((int(scores.shape[1]) - 1, int(num_matches)))
            return update(input_ids, scores, num_matches)

        generator.update_candidate_strategy = recording_update
        return generator

    verifier._get_candidate_generator = patched
    try:
        yield steps
    finally:
        if had_own:
            verifier._get_candidate_generator = previous
        else:
            del verifier._get_candidate_generator


@contextlib.contextmanager
def fixed_draft_length(drafter, gamma: int) -> Iterator[None]:
    """Set a constant draft length on ``drafter.generation_config`` (generate() ignores these as kwargs); restore."""
    gamma = _check_gamma(gamma)
    gc = drafter.generation_config
    keys = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")
    saved = {key: getattr(gc, key, None) for key in keys}
    gc.num_assistant_tokens = gamma
    gc.num_assistant_tokens_schedule = "constant"
    gc.assistant_confidence_threshold = 0.0
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(gc, key, value)


DRAFTER_WARPERS = ("once", "library")
_WARPER_NAMES = ("TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "TopHLogitsWarper",
                 "MinPLogitsWarper", "TypicalLogitsWarper", "EpsilonLogitsWarper", "EtaLogitsWarper")


@contextlib.contextmanager
def drafter_warpers(verifier, mode: str = "once") -> Iterator[dict]:
    """Control how often sampling warpers reach the drafter in assisted *sampling* (no effect on greedy).

    In transformers 5.23 the candidate generator hands the drafter the verifier's prepared logits processors,
    which already hold the sampling warpers (TemperatureLogitsWarper, ...), and the drafter's own generate()
    appends the same warpers again from the shared generation config: with temperature T the drafter samples
    from softmax(logits / T^2) while the verifier uses T (measured: an identical drafter is rejected at T != 1).
    Speculative sampling stays exact, but acceptance is then sum min(p_T, q_{T^2}), not the textbook
    sum min(p_T, q_T).

    ``once`` (default) removes the warpers from the list handed to the drafter, so it applies them once, from the
    config, like the verifier (textbook speculative sampling). ``library`` leaves transformers as it is.
    The yielded dict gets ``extra_temperature``: the product of the temperatures left in the handed-over list
    (1.0 under ``once``), so the drafter's effective temperature is T * extra_temperature.
    """
    if mode not in DRAFTER_WARPERS:
        raise UserError(f"must be one of {', '.join(DRAFTER_WARPERS)}, got {mode!r}", field="drafter_warpers")
    info: dict[str, Any] = {"mode": mode, "extra_temperature": 1.0}
    had_own = "_get_candidate_generator" in vars(verifier)
    previous = vars(verifier).get("_get_candidate_generator")
    original = verifier._get_candidate_generator

    def patched(*args, **kwargs):
        generator = original(*args, **kwargs)
        processors = getattr(generator, "logits_processor", None)
        if processors is not None:
            if mode == "once":
                kept = [p for p in processors if type(p).__name__ not in _WARPER_NAMES]
                generator.logits_processor = type(processors)(kept) if not isinstance(processors, list) else kept
            factor = 1.0
            for p in generator.logits_processor:
                if type(p).__name__ == "TemperatureLogitsWarper":
                    factor *= float(p.temperature)
            info["extra_temperature"] = factor
        return generator

    verifier._get_candidate_generator = patched
    try:
        yield info
    finally:
        if had_own:
            verifier._get_candidate_generator = previous
        else:
            del verifier._get_candidate_generator


def _generation_kwargs(model, tokenizer, max_new_tokens: int, do_sample: bool, temperature: float | None,
                       stop_at_eos: bool) -> dict:
    """Explicit settings so a checkpoint's generation_config (e.g. Qwen's repetition_penalty 1.05, top_p 0.8)
    cannot change what is measured: pure greedy, or pure sampling at ``temperature`` (no top-k/top-p)."""
    kw: dict[str, Any] = {"max_new_tokens": int(max_new_tokens), "min_new_tokens": 0, "do_sample": bool(do_sample),
                          "repetition_penalty": 1.0, "num_beams": 1, "use_cache": True}
    if do_sample:
        kw.update(temperature=float(temperature if temperature is not None else 1.0), top_k=0, top_p=1.0)
    eos = model.generation_config.eos_token_id
    if eos is None and tokenizer is not None:
        eos = tokenizer.eos_token_id
    if isinstance(eos, (list, tuple)) and not eos:
        eos = None
    # Batch size 1 needs no padding. The pad id is an EOS id (or None without EOS) on purpose: generate() infers
    # an attention mask from pad tokens when pad is not an EOS id, and the drafter's internal generate() call
    # then masks every generated token equal to the pad id, silently corrupting the drafter's predictions.
    # None in generate() kwargs means "unset" (the checkpoint's value fills it), hence `special_tokens` below.
    if stop_at_eos and eos is not None:
        kw["eos_token_id"] = eos
        kw["pad_token_id"] = eos[0] if isinstance(eos, (list, tuple)) else eos
    else:
        kw["eos_token_id"] = None
        kw["pad_token_id"] = None
    return kw


@contextlib.contextmanager
def special_tokens(models: Iterable, eos_token_id, pad_token_id) -> Iterator[None]:
    """Set eos/pad on each model's generation_config for the block (None must be set there, not passed)."""
    saved = []
    for model in models:
        gc = model.generation_config
        saved.append((gc, gc.eos_token_id, gc.pad_token_id))
        gc.eos_token_id, gc.pad_token_id = eos_token_id, pad_token_id
    try:
        yield
    finally:
        for gc, eos, pad in reversed(saved):
            gc.eos_token_id, gc.pad_token_id = eos, pad


def _decode_step_time(model, prompt_ids, n_steps: int, block: int = 1) -> float:
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


def _timed_generate(model, prompt_ids, seed: int, **kw) -> tuple[list[int], float]:
    import torch

    attention_mask = torch.ones_like(prompt_ids)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(prompt_ids, attention_mask=attention_mask, **kw)
    elapsed = time.perf_counter() - t0
    return out[0, prompt_ids.shape[1]:].tolist(), elapsed


def check_pair(verifier, drafter) -> None:
    """Refuse pairs transformers would not run on the shared-tokenizer assisted path."""
    v, d = _vocab_size(verifier), _vocab_size(drafter)
    if v != d:
        raise UserError(
            f"verifier vocabulary {v} != drafter vocabulary {d}: transformers would take the different-tokenizer "
            "(universal assisted decoding) path, which this study does not measure", field="vocab")


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
    ``drafter_warpers_mode`` picks the drafter's temperature handling (:func:`drafter_warpers`; ``once`` =
    textbook). The checkpoint's own generation settings (repetition penalty, top-p, ...) are overridden so both
    runs are pure greedy or pure sampling. ``stop_at_eos=False`` gives fixed-length outputs.

    Returns a dict with ``plain_ids`` / ``assisted_ids`` (new tokens), ``steps`` [(drafted, accepted)], the
    :func:`summarize_steps` fields, ``time_plain_s``, ``time_assisted_s``, ``speedup_measured`` (throughput
    ratio, = time ratio when both runs produce the same number of tokens), ``c``, ``verify_cost_ratio``,
    ``analytic`` (the :func:`analytic_acceptance` dict or None), ``expected_tokens_per_step``,
    ``expected_tokens_per_step_greedy``, ``speedup_predicted`` (from alpha_analytic),
    ``speedup_predicted_greedy`` (from alpha_greedy), ``steps_replayed`` (:func:`replay_greedy_steps` on the
    teacher-forced matches) and ``replay_matches_observed`` (its accepted counts equal the recorded ones; greedy
    only), ``ended_at_eos`` and ``outputs_identical`` (greedy only; None under sampling).
    """
    import torch

    gamma = _check_gamma(gamma)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise UserError(f"must be an integer >= 1, got {max_new_tokens!r}", field="max_new_tokens")
    if temperature is not None and (isinstance(temperature, bool) or not (
            isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0)):
        raise UserError(f"must be a number > 0, got {temperature!r}", field="temperature")
    check_pair(verifier, drafter)
    prompt = _as_2d(prompt_ids, "prompt_ids").to(verifier.device)
    kw = _generation_kwargs(verifier, tokenizer, max_new_tokens, do_sample, temperature, stop_at_eos)

    with special_tokens([verifier, drafter], kw["eos_token_id"], kw["pad_token_id"]):
        plain_ids, t_plain = _timed_generate(verifier, prompt, seed, **kw)
        with fixed_draft_length(drafter, gamma), drafter_warpers(verifier, drafter_warpers_mode) as warp, \
                record_verifier_steps(verifier) as steps:
            assisted_ids, t_assisted = _timed_generate(verifier, prompt, seed, assistant_model=drafter, **kw)
    steps = list(steps)
    t_verifier = float(temperature) if (do_sample and temperature is not None) else 1.0
    t_drafter = t_verifier * warp["extra_temperature"] if do_sample else 1.0

    t_draft = _decode_step_time(drafter, prompt, timing_steps)
    t_verify = _decode_step_time(verifier, prompt, timing_steps)
    t_block = _decode_step_time(verifier, prompt, timing_steps, block=gamma + 1)
    c = t_draft / t_verify if t_verify > 0 else float("nan")

    eos = kw.get("eos_token_id")
    eos_set = set(eos if isinstance(eos, (list, tuple)) else ([] if eos is None else [eos]))
    ended_at_eos = bool(assisted_ids) and assisted_ids[-1] in eos_set
    summary = summarize_steps(steps, gamma, last_censored=ended_at_eos)
    rate_plain = len(plain_ids) / t_plain if t_plain > 0 else float("nan")
    rate_assisted = len(assisted_ids) / t_assisted if t_assisted > 0 else float("nan")
    result: dict[str, Any] = {
        "gamma": gamma,
        "decoding": "sample" if do_sample else "greedy",
        "temperature": t_verifier if do_sample else None,
        "drafter_temperature": t_drafter if do_sample else None,
        "drafter_warpers": drafter_warpers_mode,
        "seed": int(seed),
        "prompt_tokens": int(prompt.shape[1]),
        "plain_ids": plain_ids,
        "assisted_ids": assisted_ids,
        "new_tokens": len(assisted_ids),
        "new_tokens_plain": len(plain_ids),
        "steps": steps,
        **summary,
        "time_plain_s": t_plain,
        "time_assisted_s": t_assisted,
        "tokens_per_s_plain": rate_plain,
        "tokens_per_s_assisted": rate_assisted,
        "speedup_measured": rate_assisted / rate_plain if rate_plain > 0 else float("nan"),
        "time_draft_step_s": t_draft,
        "time_verify_step_s": t_verify,
        "time_verify_block_s": t_block,
        "c": c,
        "verify_cost_ratio": t_block / t_verify if t_verify > 0 else float("nan"),
        "ended_at_eos": ended_at_eos,
        "outputs_identical": (plain_ids == assisted_ids) if not do_sample else None,
        "analytic": None,
        "steps_replayed": None,
        "replay_matches_observed": None,
    }
    nan = float("nan")
    result.update(expected_tokens_per_step=nan, expected_tokens_per_step_greedy=nan,
                  speedup_predicted=nan, speedup_predicted_greedy=nan)
    if analytic and plain_ids:
        an = analytic_acceptance(verifier, drafter, prompt, plain_ids, temperature=t_verifier,
                                 drafter_temperature=t_drafter,
                                 vocab_size=len(tokenizer) if tokenizer is not None else None)
        result["analytic"] = an
        result["expected_tokens_per_step"] = expected_tokens_per_step(an["alpha"], gamma)
        result["expected_tokens_per_step_greedy"] = expected_tokens_per_step(an["alpha_greedy"], gamma)
        if math.isfinite(c):
            result["speedup_predicted"] = expected_speedup(an["alpha"], gamma, c)
            result["speedup_predicted_greedy"] = expected_speedup(an["alpha_greedy"], gamma, c)
        if not do_sample:
            replay = replay_greedy_steps(an["matches"], gamma, max_new_tokens)
            result["steps_replayed"] = replay
            result["replay_matches_observed"] = [a for _, a in replay] == [a for _, a in steps]
    return result


# ------------------------------------------------------------------------------------------------------------------
# Prompts, workload mix, study


def load_prompts(path: str | Path | None = None) -> list[dict]:
    """Read a JSONL prompt file (default: the built-in set). Each line: task, prompt_id, and text or messages."""
    if path is None:
        text = resources.files("reprogrid").joinpath("data/specdec_prompts.jsonl").read_text(encoding="utf-8")
        where = "specdec_prompts.jsonl (built-in)"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot read the prompt file: {exc.strerror}", field=str(path)) from None
        where = str(path)
    prompts = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"line {n} is not JSON ({exc.msg})", field=where) from None
        prompts.append(item)
    validate_prompts(prompts, where)
    return prompts


def validate_prompts(prompts: list[dict], where: str = "prompts") -> None:
    if not prompts:
        raise UserError("no prompts", field=where)
    seen = set()
    for i, p in enumerate(prompts):
        if not isinstance(p, dict):
            raise UserError(f"item {i} is not an object", field=where)
        for key in ("task", "prompt_id"):
            if not isinstance(p.get(key), str) or not p[key]:
                raise UserError(f"item {i} needs a non-empty string '{key}'", field=where)
        has_text = isinstance(p.get("text"), str) and bool(p["text"])
        msgs = p.get("messages")
        has_msgs = isinstance(msgs, list) and bool(msgs) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in msgs)
        if has_text == bool(has_msgs):
            raise UserError(f"item {i} ({p['prompt_id']}) needs exactly one of 'text' (string) or 'messages' "
                            "(list of {role, content})", field=where)
        key = (p["task"], p["prompt_id"])
        if key in seen:
            raise UserError(f"duplicate (task, prompt_id) {key}", field=where)
        seen.add(key)


def workload_order(prompts: list[dict], mix: str) -> list[dict]:
    """Order prompts for a workload-mix condition; returns copies with ``position`` (0-based run order) and ``mix``.

    ``single``: all prompts of one task, then the next task (tasks in order of first appearance, prompts in file
    order). ``interleaved``: round-robin over tasks (one prompt of each task in turn). Only the order changes.
    """
    if mix not in MIXES:
        raise UserError(f"must be one of {', '.join(MIXES)}, got {mix!r}", field="mix")
    by_task: dict[str, list[dict]] = {}
    for p in prompts:
        by_task.setdefault(p["task"], []).append(p)
    if mix == "single":
        ordered = [p for group in by_task.values() for p in group]
    else:
        ordered = []
        queues = [list(group) for group in by_task.values()]
        while any(queues):
            for q in queues:
                if q:
                    ordered.append(q.pop(0))
    return [{**p, "position": i, "mix": mix} for i, p in enumerate(ordered)]


def encode_prompt(tokenizer, prompt: dict, chat_template: bool = False):
    """Token ids [1, n] of a prompt; ``messages`` always, and ``text`` when ``chat_template``, go through the
    tokenizer's chat template with the generation prompt appended."""
    import torch

    if "messages" in prompt or chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("the tokenizer has no chat template (needed for 'messages' or --chat-template)",
                            field=f"prompt {prompt.get('prompt_id')}")
        messages = prompt.get("messages") or [{"role": "user", "content": prompt["text"]}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                            return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        ids = list(ids[0]) if ids and isinstance(ids[0], list) else list(ids)
    else:
        ids = tokenizer(prompt["text"], add_special_tokens=True)["input_ids"]
    if not ids:
        raise UserError("prompt encodes to zero tokens", field=f"prompt {prompt.get('prompt_id')}")
    return torch.tensor([ids], dtype=torch.long)


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


def _row(prompt: dict, m: dict, tokenizer, position: int, mix: str | None) -> dict:
    an = m["analytic"] or {}
    replay = m["steps_replayed"]
    return {
        "task": prompt["task"], "prompt_id": prompt["prompt_id"], "position": position, "mix": mix or "as_given",
        "gamma": m["gamma"], "decoding": m["decoding"], "temperature": m["temperature"],
        "drafter_temperature": m["drafter_temperature"], "drafter_warpers": m["drafter_warpers"], "seed": m["seed"],
        "prompt_tokens": m["prompt_tokens"], "new_tokens": m["new_tokens"], "new_tokens_plain": m["new_tokens_plain"],
        "n_steps": m["n_steps"],
        "alpha_analytic": an.get("alpha", float("nan")), "alpha_greedy": an.get("alpha_greedy", float("nan")),
        "alpha_empirical": m["alpha_empirical"],
        "tokens_per_step": m["tokens_per_step"], "tokens_per_full_step": m["tokens_per_full_step"],
        "tokens_per_step_replayed": summarize_steps(replay, m["gamma"])["tokens_per_step"] if replay else float("nan"),
        "expected_tokens_per_step": m["expected_tokens_per_step"],
        "expected_tokens_per_step_greedy": m["expected_tokens_per_step_greedy"],
        "c": m["c"], "verify_cost_ratio": m["verify_cost_ratio"], "speedup_measured": m["speedup_measured"],
        "speedup_predicted": m["speedup_predicted"], "speedup_predicted_greedy": m["speedup_predicted_greedy"],
        "cross_entropy": an.get("cross_entropy", float("nan")), "kl": an.get("kl", float("nan")),
        "outputs_identical": m["outputs_identical"], "replay_matches_observed": m["replay_matches_observed"],
        "ended_at_eos": m["ended_at_eos"],
        "time_plain_s": m["time_plain_s"], "time_assisted_s": m["time_assisted_s"],
        "time_draft_step_s": m["time_draft_step_s"], "time_verify_step_s": m["time_verify_step_s"],
        "time_verify_block_s": m["time_verify_block_s"],
        "output_text": tokenizer.decode(m["plain_ids"], skip_special_tokens=False) if tokenizer is not None else "",
    }


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
    gamma = _check_gamma(gamma)
    validate_prompts(prompts)
    check_pair(verifier, drafter)
    ordered = workload_order(prompts, mix) if mix is not None else [
        {**p, "position": i, "mix": None} for i, p in enumerate(prompts)]
    do_sample = decoding == "sample"
    encoded = [encode_prompt(tokenizer, p, chat_template) for p in ordered]
    if warmup:
        measure_assisted(verifier, drafter, tokenizer, encoded[0], gamma, min(4, max_new_tokens), do_sample,
                         temperature, seed, timing_steps=1, analytic=False, drafter_warpers_mode=drafter_warpers_mode)
    rows, step_rows = [], []
    for p, ids in zip(ordered, encoded):
        m = measure_assisted(verifier, drafter, tokenizer, ids, gamma, max_new_tokens, do_sample, temperature, seed,
                             timing_steps=timing_steps, stop_at_eos=stop_at_eos,
                             drafter_warpers_mode=drafter_warpers_mode)
        rows.append(_row(p, m, tokenizer, p["position"], mix))
        step_rows += [{"task": p["task"], "prompt_id": p["prompt_id"], "position": p["position"], "step": i,
                       "drafted": d, "accepted": a} for i, (d, a) in enumerate(m["steps"])]
        log.info("specdec %s/%s: %d tokens, %.2f tokens/step, speed-up %.2f", p["task"], p["prompt_id"],
                 m["new_tokens"], m["tokens_per_step"], m["speedup_measured"])
    df = pd.DataFrame(rows, columns=STUDY_COLUMNS)
    if return_steps:
        steps = pd.DataFrame(step_rows, columns=["task", "prompt_id", "position", "step", "drafted", "accepted"])
        return df, steps
    return df


# ------------------------------------------------------------------------------------------------------------------
# Disparity across tasks


def _cv(means: np.ndarray) -> float:
    mu = float(np.mean(means))
    return float(np.std(means, ddof=0) / abs(mu)) if mu != 0 else float("nan")


def _ratio(means: np.ndarray) -> float:
    lo = float(np.min(means))
    return float(np.max(means) / lo) if lo > 0 else float("nan")


def disparity(df, value: str = "speedup_measured", by: str = "task", *, n_boot: int = 2000, seed: int = 0,
              level: float = 0.95) -> dict:
    """Per-group means of ``value`` with percentile bootstrap intervals and across-group disparity measures.

    Bootstrap: prompts (rows) are resampled with replacement within each group (stratified), ``n_boot``
    times with ``numpy.random.default_rng(seed)``; the same resamples give intervals for the max/min ratio and the
    coefficient of variation (population std / |mean| of the group means). ``ce_variance`` is reprogrid's own
    definition (see ``CE_VARIANCE_LABEL``), computed when the frame has a ``cross_entropy`` column.
    The bootstrap distribution of max/min is biased upward (the max of noisy group means overshoots, the min
    undershoots), so its percentile interval can sit above the point estimate when groups are close; read it as
    an upper-side uncertainty band, not a symmetric interval.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise UserError("expected a pandas DataFrame", field="df")
    for col in (value, by):
        if col not in df.columns:
            raise UserError(f"column '{col}' not in the table (columns: {', '.join(map(str, df.columns))})",
                            field="df")
    if not (0 < level < 1):
        raise UserError(f"must be in (0, 1), got {level!r}", field="level")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise UserError(f"must be an integer >= 1, got {n_boot!r}", field="n_boot")
    data = df[[by, value]].copy()
    data[value] = pd.to_numeric(data[value], errors="coerce")
    data = data[np.isfinite(data[value].to_numpy(dtype=float))]
    if data.empty:
        raise UserError(f"no finite values in column '{value}'", field="df")
    groups = {str(k): g[value].to_numpy(dtype=float) for k, g in data.groupby(by, sort=True)}
    names = list(groups)
    rng = np.random.default_rng(seed)
    lo_q, hi_q = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    boot = np.empty((n_boot, len(names)))
    for j, name in enumerate(names):
        x = groups[name]
        idx = rng.integers(0, len(x), size=(n_boot, len(x)))
        boot[:, j] = x[idx].mean(axis=1)
    means = np.array([groups[n].mean() for n in names])
    per_group = {}
    for j, name in enumerate(names):
        x = groups[name]
        per_group[name] = {
            "mean": float(means[j]), "n": int(len(x)),
            "sd": float(np.std(x, ddof=1)) if len(x) > 1 else float("nan"),
            "ci_low": float(np.percentile(boot[:, j], lo_q)), "ci_high": float(np.percentile(boot[:, j], hi_q)),
        }
    boot_ratio = np.array([_ratio(row) for row in boot])
    boot_cv = np.array([_cv(row) for row in boot])

    def _ci(arr: np.ndarray) -> list[float]:
        arr = arr[np.isfinite(arr)]
        return [float(np.percentile(arr, lo_q)), float(np.percentile(arr, hi_q))] if arr.size else [math.nan] * 2

    out: dict[str, Any] = {
        "value": value, "by": by, "n_boot": n_boot, "seed": seed, "level": level,
        "groups": per_group,
        "max_group": names[int(np.argmax(means))], "min_group": names[int(np.argmin(means))],
        "max_min_ratio": _ratio(means), "max_min_ratio_ci": _ci(boot_ratio),
        "cv": _cv(means), "cv_ci": _ci(boot_cv),
        "cv_definition": "population std (ddof=0) of the group means divided by |mean of the group means|",
        "ce_variance": None, "ce_group_means": None, "ce_variance_definition": CE_VARIANCE_LABEL,
    }
    if "cross_entropy" in df.columns:
        ce = df[[by, "cross_entropy"]].copy()
        ce["cross_entropy"] = pd.to_numeric(ce["cross_entropy"], errors="coerce")
        ce = ce[np.isfinite(ce["cross_entropy"].to_numpy(dtype=float))]
        if not ce.empty:
            ce_means = ce.groupby(by, sort=True)["cross_entropy"].mean()
            out["ce_group_means"] = {str(k): float(v) for k, v in ce_means.items()}
            out["ce_variance"] = float(np.var(ce_means.to_numpy(dtype=float), ddof=0))
    return out


# ------------------------------------------------------------------------------------------------------------------
# Workflow: the `specdec:` config section -> measurement cells -> study tables (rules/specdec.smk)
#
# A *cell* is one (pair, gamma, decoding, mix, chat_template) combination; each runs every configured prompt with
# the verifier alone and with the drafter (run_study). The study's factors are these five plus the prompt's task.

STUDY_FACTORS = ("task", "pair", "gamma", "decoding", "mix", "chat_template", "backend")
CELL_COLUMNS = ["cell_id", "pair", "verifier", "drafter", "verifier_quantization", "drafter_quantization",
                "chat_template", "backend", "status", "acceptance_rate_tokens"]
STEP_COLUMNS = ["task", "prompt_id", "position", "step", "drafted", "accepted"]
BACKENDS = ("hf", "vllm")
WORKFLOW_VERBS = ("cells", "run", "collect", "attribute")


def _raw(cfg) -> dict:
    return cfg.raw if hasattr(cfg, "raw") else cfg


def pair_name(pair: dict) -> str:
    """Default label of a pair: ``<drafter>[.<level>]-drafts-<verifier>[.<level>]`` (``source`` levels omitted)."""
    def side(slug: str, level: str) -> str:
        return slug if level == "source" else f"{slug}.{level}"

    return (f"{side(pair['drafter'], pair.get('drafter_quantization', 'source'))}-drafts-"
            f"{side(pair['verifier'], pair.get('verifier_quantization', 'source'))}")


def study_settings(cfg) -> dict:
    """The ``specdec:`` section with the schema's defaults filled in; pairs get ``name`` and prepared-model keys."""
    from reprogrid.catalogue import prepared_key, schema

    section = _raw(cfg).get("specdec")
    if not section:
        raise UserError("the config has no specdec section (the speculative decoding study is not configured)",
                        field="specdec")
    props = schema()["properties"]["specdec"]["properties"]
    settings = {k: v.get("default") for k, v in props.items() if k != "pairs"}
    settings.update({k: v for k, v in section.items() if k != "pairs"})
    pair_props = props["pairs"]["items"]["properties"]
    pairs = []
    for p in section["pairs"]:
        full = {k: spec["default"] for k, spec in pair_props.items() if "default" in spec}
        full.update(p)
        full["name"] = p.get("name") or pair_name(full)
        full["verifier_key"] = prepared_key(full["verifier"], full["verifier_quantization"])
        full["drafter_key"] = prepared_key(full["drafter"], full["drafter_quantization"])
        pairs.append(full)
    settings["pairs"] = pairs
    return settings


def cell_id(pair: str, gamma: int, decoding: str, mix: str, chat_template: bool, backend: str = "hf") -> str:
    """``<pair>__g<gamma>__<decoding>__<mix>__<chat|raw>`` (+ ``__vllm`` for the vLLM backend)."""
    base = f"{pair}__g{int(gamma)}__{decoding}__{mix}__{'chat' if chat_template else 'raw'}"
    return base if backend == "hf" else f"{base}__{backend}"


def study_cells(cfg) -> dict[str, dict]:
    """Every measurement cell of the configured study, by cell id (the Snakemake wildcard), in config order."""
    s = study_settings(cfg)
    cells: dict[str, dict] = {}
    combos = [(p, g, d, m, ch, b) for b in s["backend"] for p in s["pairs"] for g in s["gamma"] for d in s["decoding"]
              for m in s["mix"] for ch in s["chat_template"]]
    for p, gamma, decoding, mix, chat, backend in combos:
        cid = cell_id(p["name"], gamma, decoding, mix, chat, backend)
        cells[cid] = {
            "cell_id": cid, "pair": p["name"], "verifier": p["verifier"], "drafter": p["drafter"],
            "verifier_quantization": p["verifier_quantization"],
            "drafter_quantization": p["drafter_quantization"],
            "verifier_key": p["verifier_key"], "drafter_key": p["drafter_key"],
            "on_vocab_mismatch": p["on_vocab_mismatch"], "gamma": int(gamma), "decoding": decoding,
            "temperature": float(s["temperature"]) if decoding == "sample" else None,
            "mix": mix, "chat_template": bool(chat), "backend": backend,
        }
    return cells


def study_prompts(settings: dict) -> list[dict]:
    """The built-in prompts of the configured tasks (in the config's task order), the first N of each task."""
    by_task: dict[str, list[dict]] = {}
    for p in load_prompts():
        by_task.setdefault(p["task"], []).append(p)
    out = []
    for task in settings["tasks"]:
        if task not in by_task:
            raise UserError(f"'{task}' is not a built-in prompt task ({', '.join(by_task)})", field="specdec.tasks")
        out += by_task[task][: int(settings["prompts_per_task"])]
    return out


def _config_vocab(directory: Path) -> int | None:
    try:
        data = json.loads(Path(directory, "config.json").read_text())
    except (OSError, ValueError):
        return None
    data = data.get("text_config", data) if isinstance(data.get("text_config"), dict) else data
    v = data.get("vocab_size")
    return int(v) if isinstance(v, int) else None


def _pair_problem(verifier_dir: Path, drafter_dir: Path) -> str | None:
    """Why transformers would not run this pair on the shared-tokenizer path (None: it would), from the files."""
    v, d = _config_vocab(verifier_dir), _config_vocab(drafter_dir)
    if v is not None and d is not None and v != d:
        return (f"verifier vocabulary {v} != drafter vocabulary {d}: transformers would take the different-tokenizer "
                "(universal assisted decoding) path, which this study does not measure")
    tv, td = Path(verifier_dir, "tokenizer.json"), Path(drafter_dir, "tokenizer.json")
    if tv.is_file() and td.is_file():
        from reprogrid.io import sha256_file

        if sha256_file(tv) != sha256_file(td):
            from transformers import AutoTokenizer

            if AutoTokenizer.from_pretrained(verifier_dir).get_vocab() != \
                    AutoTokenizer.from_pretrained(drafter_dir).get_vocab():
                return ("verifier and drafter tokenizers differ: transformers would take the different-tokenizer "
                        "path, which this study does not measure")
    return None


def _empty_tables():
    import pandas as pd

    return pd.DataFrame(columns=STUDY_COLUMNS), pd.DataFrame(columns=STEP_COLUMNS)


def _with_cell_columns(df, cell: dict, status: str, steps=None):
    """Prefix the cell's factor columns; ``acceptance_rate_tokens`` = accepted / drafted draft tokens per prompt."""
    import pandas as pd

    df = df.copy()
    rate = []
    for _, r in df.iterrows():
        if steps is not None and len(steps):
            s = steps[(steps["task"] == r["task"]) & (steps["prompt_id"] == r["prompt_id"])]
            drafted = float(s["drafted"].sum())
            rate.append(float(s["accepted"].sum()) / drafted if drafted > 0 else float("nan"))
        else:
            rate.append(r.get("acceptance_rate_tokens", float("nan")) if "acceptance_rate_tokens" in df.columns
                        else float("nan"))
    values = {"cell_id": cell["cell_id"], "pair": cell["pair"], "verifier": cell["verifier"],
              "drafter": cell["drafter"], "verifier_quantization": cell["verifier_quantization"],
              "drafter_quantization": cell["drafter_quantization"], "chat_template": cell["chat_template"],
              "backend": cell["backend"], "status": status}
    front = pd.DataFrame({k: pd.Series([v] * len(df), index=df.index, dtype=object) for k, v in values.items()})
    front["acceptance_rate_tokens"] = pd.Series(rate, index=df.index, dtype=float)
    rest = df.drop(columns=[c for c in CELL_COLUMNS if c in df.columns])
    return pd.concat([front, rest], axis=1)


def _measure_vllm(cell: dict, settings: dict, prompts: list[dict], verifier_dir: Path, drafter_dir: Path,
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

    def counters(llm) -> dict:
        out = {"num_drafts": 0.0, "num_draft_tokens": 0.0, "num_accepted_tokens": 0.0}
        for m in llm.get_metrics():
            name = m.name.removesuffix("_total")
            for key in out:
                if name == f"vllm:spec_decode_{key}":
                    out[key] += float(getattr(m, "value", 0.0) or 0.0)
        return out

    def run(llm, ids):
        t0 = time.perf_counter()
        res = llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)
        return list(res[0].outputs[0].token_ids), time.perf_counter() - t0

    plain = LLM(model=str(verifier_dir), **common)
    run(plain, token_ids[0][:8])  # warm-up
    plain_out = [run(plain, ids) for ids in token_ids]
    spec = LLM(model=str(verifier_dir), speculative_config={
        "method": "draft_model", "model": str(drafter_dir), "num_speculative_tokens": int(cell["gamma"])}, **common)
    run(spec, token_ids[0][:8])
    rows = []
    for p, ids, (p_ids, t_plain) in zip(ordered, token_ids, plain_out):
        before = counters(spec)
        a_ids, t_spec = run(spec, ids)
        after = counters(spec)
        d = {k: after[k] - before[k] for k in after}
        rate_plain, rate_spec = len(p_ids) / t_plain, len(a_ids) / t_spec
        nan = float("nan")
        rows.append({**{c: nan for c in STUDY_COLUMNS},
                     "task": p["task"], "prompt_id": p["prompt_id"], "position": p["position"], "mix": cell["mix"],
                     "gamma": cell["gamma"], "decoding": cell["decoding"], "temperature": cell["temperature"],
                     "drafter_temperature": cell["temperature"], "drafter_warpers": "vllm", "seed": int(seed),
                     "prompt_tokens": len(ids), "new_tokens": len(a_ids), "new_tokens_plain": len(p_ids),
                     "n_steps": int(d["num_drafts"]),
                     "tokens_per_step": (1 + d["num_accepted_tokens"] / d["num_drafts"]) if d["num_drafts"] else nan,
                     "speedup_measured": rate_spec / rate_plain if rate_plain > 0 else nan,
                     "outputs_identical": (p_ids == a_ids) if greedy else None, "ended_at_eos": None,
                     "replay_matches_observed": None, "time_plain_s": t_plain, "time_assisted_s": t_spec,
                     "output_text": tok.decode(p_ids), "acceptance_rate_tokens":
                         d["num_accepted_tokens"] / d["num_draft_tokens"] if d["num_draft_tokens"] else nan})
    df = pd.DataFrame(rows, columns=[*STUDY_COLUMNS, "acceptance_rate_tokens"])
    return df, pd.DataFrame(columns=STEP_COLUMNS)


def run_cell(cfg, cell: str, verifier_dir, drafter_dir, out_dir, *, threads: int | None = None,
             log=lambda m: None) -> dict:
    """Measure one cell of the configured study; write ``<cell>.parquet``, ``<cell>.steps.parquet``, ``<cell>.json``.

    ``verifier_dir`` / ``drafter_dir``: prepared model directories (``reprogrid prepare-model``) of the pair's
    (model, quantization). A pair that transformers would run on its different-tokenizer path is refused, or
    written as an empty cell with status ``skipped: ...`` when the pair says ``on_vocab_mismatch: skip``.
    Returns the cell's metadata (also written to the JSON file).
    """
    import platform

    from reprogrid.io import short_hash, write_json, write_parquet

    cells = study_cells(cfg)
    if cell not in cells:
        raise UserError(f"unknown cell '{cell}'; the config has: {', '.join(cells)}", field="--cell")
    c = cells[cell]
    s = study_settings(cfg)
    prompts = study_prompts(s)
    verifier_dir, drafter_dir, out_dir = Path(verifier_dir), Path(drafter_dir), Path(out_dir)
    for d, name in ((verifier_dir, "--verifier-dir"), (drafter_dir, "--drafter-dir")):
        if not Path(d, "config.json").is_file():
            raise UserError("not a prepared transformers model directory (no config.json)", field=f"{name} {d}")
    seed = int(_raw(cfg).get("seed", 1234))
    models = _raw(cfg)["models"]
    t0 = time.perf_counter()
    status, steps = "ok", None
    problem = _pair_problem(verifier_dir, drafter_dir)
    if problem is not None:
        if c["on_vocab_mismatch"] != "skip":
            raise UserError(problem + f"; set on_vocab_mismatch: skip on pair '{c['pair']}' to record it as "
                            "not measured", field=f"specdec.pairs[{c['pair']}]")
        status = f"skipped: {problem}"
        df, steps = _empty_tables()
        log(f"[specdec] {cell}: {status}")
    elif c["backend"] == "vllm":
        df, steps = _measure_vllm(c, s, prompts, verifier_dir, drafter_dir, seed)
    else:
        import torch

        from reprogrid.models import load_prepared

        if threads:
            torch.set_num_threads(int(threads))
        log(f"[specdec] {cell}: loading {verifier_dir.name} and {drafter_dir.name}")
        verifier, tok = load_prepared(verifier_dir, dtype=s["dtype"], quantization=c["verifier_quantization"],
                                      device=models[c["verifier"]].get("device", "cpu"))
        drafter, _ = load_prepared(drafter_dir, dtype=s["dtype"], quantization=c["drafter_quantization"],
                                   device=models[c["drafter"]].get("device", "cpu"))
        df, steps = run_study(verifier, drafter, tok, prompts, gamma=c["gamma"], max_new_tokens=s["max_new_tokens"],
                              decoding=c["decoding"], temperature=c["temperature"], seed=seed,
                              chat_template=c["chat_template"], mix=c["mix"], timing_steps=s["timing_steps"],
                              stop_at_eos=True, drafter_warpers_mode=s["drafter_warpers"], return_steps=True)
    table = _with_cell_columns(df, c, status, steps if c["backend"] == "hf" else None)
    steps = steps.copy()
    steps.insert(0, "cell_id", cell)
    write_parquet(table, out_dir / f"{cell}.parquet")
    write_parquet(steps, out_dir / f"{cell}.steps.parquet")
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
    write_json(out_dir / f"{cell}.json", meta)
    return meta


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


def _per_prompt(df):
    """One row per (task, prompt_id): the mean of each measured quantity over the cells the prompt ran in.

    The same prompts run in every cell (mix only reorders them, and greedy acceptance is order-invariant), so rows
    of one prompt are not independent draws; disparity intervals resample prompts, not rows."""
    import pandas as pd

    cols = ["speedup_measured", "alpha_empirical", "alpha_analytic", "alpha_greedy", "cross_entropy"]
    data = df[["task", "prompt_id"]].copy()
    for c in cols:
        data[c] = pd.to_numeric(df[c], errors="coerce") if c in df.columns else np.nan
    return data.groupby(["task", "prompt_id"], sort=True, as_index=False)[cols].mean()


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

    s = study_settings(cfg)
    n_boot = int(n_boot or s["bootstrap"])
    seed = int(_raw(cfg).get("seed", 1234))
    frames, step_frames = [], []
    for t in tables:
        t = Path(t)
        if not t.is_file():
            raise UserError("cell table not found", field=str(t))
        frames.append(pd.read_parquet(t))
        sp = t.with_name(t.name.removesuffix(".parquet") + ".steps.parquet")
        if sp.is_file():
            step_frames.append(pd.read_parquet(sp))
    if not frames:
        raise UserError("no cell tables given", field="TABLES")
    df = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    df["speedup_predicted_block"] = predicted_speedup_block(df)
    steps = pd.concat(step_frames, ignore_index=True) if step_frames else pd.DataFrame(columns=["cell_id", *STEP_COLUMNS])
    out = Path(out_dir)
    write_parquet(df, out / "specdec.parquet")
    write_parquet(steps, out / "specdec_steps.parquet")
    statuses = {}
    for t, f in zip(tables, frames):
        meta_path = Path(t).with_name(Path(t).name.removesuffix(".parquet") + ".json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        statuses[meta.get("cell_id", Path(t).stem)] = meta.get("status", "ok" if len(f) else "empty")
    measured = df[df["status"].astype(str) == "ok"] if "status" in df.columns else df
    result: dict[str, Any]
    if measured.empty:
        result = {"value": "speedup_measured", "by": "task", "groups": {}, "note": "no cell was measured"}
    else:
        result = disparity(_per_prompt(measured), "speedup_measured", "task", n_boot=n_boot, seed=seed)
    result["scope"] = ("all measured cells pooled (every pair, gamma, decoding, mix and chat level); the bootstrap "
                       "unit is the prompt: each prompt's values are first averaged over the cells it ran in")
    result["cell_status"] = statuses
    result["by_pair"], result["by_cell"], result["mix"], result["invariance"] = {}, {}, {}, {}
    for pair, g in measured.groupby("pair", sort=False):
        entry = {"speedup": disparity(_per_prompt(g), "speedup_measured", "task", n_boot=n_boot, seed=seed)}
        acc = _per_prompt(g)
        acc = acc[np.isfinite(acc["alpha_empirical"].to_numpy(dtype=float))]
        entry["acceptance"] = (disparity(acc, "alpha_empirical", "task", n_boot=n_boot, seed=seed)
                               if len(acc) else None)
        means = ["alpha_greedy", "alpha_analytic", "alpha_empirical", "acceptance_rate_tokens", "tokens_per_step",
                 "expected_tokens_per_step", "expected_tokens_per_step_greedy", "c", "verify_cost_ratio",
                 "speedup_measured", "speedup_predicted", "speedup_predicted_greedy", "speedup_predicted_block",
                 "cross_entropy", "kl"]
        per_task = g.groupby("task", sort=True)[[m for m in means if m in g.columns]].agg(
            lambda x: float(pd.to_numeric(x, errors="coerce").mean()))
        entry["per_task"] = {str(t): {k: float(v) for k, v in row.items()} for t, row in per_task.iterrows()}
        result["by_pair"][str(pair)] = entry
        greedy = g[g["decoding"].astype(str) == "greedy"]
        if len(greedy):
            same = greedy["outputs_identical"].astype(bool)
            result["invariance"][str(pair)] = {"greedy_prompts": int(len(greedy)), "identical": int(same.sum()),
                                               "all_identical": bool(same.all())}
        for mix, gm in g.groupby("mix", sort=False):
            tok_plain = pd.to_numeric(gm["new_tokens_plain"], errors="coerce").sum() / \
                pd.to_numeric(gm["time_plain_s"], errors="coerce").sum()
            tok_spec = pd.to_numeric(gm["new_tokens"], errors="coerce").sum() / \
                pd.to_numeric(gm["time_assisted_s"], errors="coerce").sum()
            result["mix"].setdefault(str(pair), {})[str(mix)] = {
                "n": int(len(gm)), "speedup_mean": float(pd.to_numeric(gm["speedup_measured"], errors="coerce").mean()),
                "tokens_per_s_plain": float(tok_plain), "tokens_per_s_assisted": float(tok_spec),
                "speedup_pooled": float(tok_spec / tok_plain) if tok_plain > 0 else float("nan")}
    for cid, g in measured.groupby("cell_id", sort=False):
        d = disparity(g, "speedup_measured", "task", n_boot=n_boot, seed=seed)
        result["by_cell"][str(cid)] = {k: d[k] for k in ("max_group", "min_group", "max_min_ratio", "max_min_ratio_ci",
                                                         "cv", "cv_ci", "ce_variance", "groups")}
    write_json(out / "disparity.json", result)
    return result


def attribute_study(table, out_dir, *, bootstrap: int = 200, seed: int = 0) -> dict:
    """Attribute speed-up and acceptance spread to the study's factors with reprogrid's attribution engine.

    Writes ``attribution_speedup.{csv,json}`` (response ``speedup_measured``) and ``attribution_acceptance.{csv,json}``
    (``alpha_empirical``; ``acceptance_rate_tokens`` when no row has it, e.g. vLLM cells). Factors: those of
    ``STUDY_FACTORS`` that vary among measured rows; item: ``prompt_id`` (prompts are crossed with every cell factor
    and nested in task). A response with nothing to attribute gets a residual-only table and the reason.
    """
    import pandas as pd

    from reprogrid.attribution import COLUMNS, attribute, varying_factors
    from reprogrid.io import write_json, write_text

    df = pd.read_parquet(table) if not isinstance(table, pd.DataFrame) else table
    if "status" in df.columns:
        df = df[df["status"].astype(str) == "ok"]
    out = Path(out_dir)
    summary = {}
    for name, candidates in (("speedup", ["speedup_measured"]),
                             ("acceptance", ["alpha_empirical", "acceptance_rate_tokens"])):
        response, data = candidates[0], df
        for col in candidates:
            vals = pd.to_numeric(df.get(col, pd.Series(dtype=float)), errors="coerce")
            if np.isfinite(vals.to_numpy(dtype=float)).any():
                response = col
                data = df[np.isfinite(vals.to_numpy(dtype=float))].copy()
                data[col] = vals[np.isfinite(vals.to_numpy(dtype=float))].astype(float)
                break
        else:
            data = df.iloc[0:0]
        data = data.copy()
        for f in STUDY_FACTORS:
            if f in data.columns:
                data[f] = data[f].astype(str)
        factors = varying_factors(data, [f for f in STUDY_FACTORS if f in data.columns]) if len(data) else []
        reason = None
        if data.empty:
            reason = f"no finite {response} values"
        elif not factors:
            reason = "no study factor varies among the measured rows"
        elif data[response].nunique() <= 1:
            reason = f"every row has the same {response}"
        if reason:
            table_out = pd.DataFrame([{c: np.nan for c in COLUMNS} | {"effect": f} for f in factors]
                                     + [{c: np.nan for c in COLUMNS} | {"effect": "residual"}], columns=COLUMNS)
            details = {"degenerate": reason, "response": response, "factors": factors, "n_rows": int(len(data)),
                       "effects": []}
        else:
            res = attribute(data, response, factors, item="prompt_id", bootstrap=bootstrap, seed=seed)
            table_out = res.table
            details = {**res.to_json_obj(), "response": response, "factors": factors, "item": "prompt_id",
                       "n_rows": int(len(data))}
        write_text(out / f"attribution_{name}.csv",
                   table_out.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
        write_json(out / f"attribution_{name}.json", details)
        summary[name] = {"response": response, "factors": factors, "degenerate": reason}
    return summary


def check_specdec(cfg) -> None:
    """Semantic checks of the `specdec:` section that the schema cannot express (it checks types and enums)."""
    section = cfg.raw.get("specdec")
    if section is None:
        return
    where = f"{cfg.path}: specdec"
    settings = study_settings(cfg)
    names: dict[str, int] = {}
    for i, pair in enumerate(settings["pairs"]):
        for role in ("verifier", "drafter"):
            if pair[role] not in cfg.models:
                raise UserError(f"'{pair[role]}' is not a key of models ({', '.join(cfg.models)})",
                                field=f"{where}.pairs[{i}].{role}")
        if pair["verifier"] == pair["drafter"] and \
                pair["verifier_quantization"] == pair["drafter_quantization"]:
            raise UserError("the drafter is the verifier itself with the same weights (nothing to measure); "
                            "set drafter_quantization (e.g. q4_0) for a quantized self-drafter",
                            field=f"{where}.pairs[{i}]")
        if pair["name"] in names:
            raise UserError(f"pair name '{pair['name']}' is used twice (pairs [{names[pair['name']]}] and [{i}]); "
                            "give one a `name`", field=f"{where}.pairs[{i}].name")
        names[pair["name"]] = i
        if "vllm" in settings["backend"]:
            for role in ("verifier", "drafter"):
                if cfg.models[pair[role]].get("device", "cpu") != "cuda":
                    raise UserError("backend vllm runs speculative decoding on CUDA only; set "
                                    f"models.{pair[role]}.device: cuda or use backend hf",
                                    field=f"{where}.pairs[{i}].{role}")
    for key in ("gamma",):
        for g in settings[key]:
            if isinstance(g, bool) or not isinstance(g, int) or g < 1:
                raise UserError(f"{g!r} must be an integer >= 1", field=f"{where}.{key}")
    temp = settings["temperature"]
    if isinstance(temp, bool) or not isinstance(temp, (int, float)) or not temp > 0:
        raise UserError(f"{temp!r} must be a number > 0", field=f"{where}.temperature")
    counts: dict[str, int] = {}
    for p in load_prompts():
        counts[p["task"]] = counts.get(p["task"], 0) + 1
    for task in settings["tasks"]:
        if task not in counts:
            raise UserError(f"'{task}' is not a built-in prompt task ({', '.join(counts)})", field=f"{where}.tasks")
        if settings["prompts_per_task"] > counts[task]:
            raise UserError(f"{settings['prompts_per_task']} exceeds the {counts[task]} built-in prompts of "
                            f"task '{task}'", field=f"{where}.prompts_per_task")
