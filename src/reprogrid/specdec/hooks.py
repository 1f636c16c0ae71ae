"""Context managers around transformers' assisted generation, and the generation settings that pin what is
measured.

transformers 5.23 behaviours this module works around (both found while testing on tiny models):

* Assisted *sampling* applies the temperature twice to the drafter (q at T^2, p at T); an identical drafter is
  then rejected. ``drafter_warpers_mode="once"`` (default) restores the textbook algorithm; ``"library"``
  measures transformers as shipped, and the analytic alpha then uses the drafter's effective temperature.
* generate() infers an attention mask from pad tokens when the pad id is not an EOS id; inside assisted
  generation the drafter then masks every *generated* token equal to the pad id. The pad id is therefore set
  to an EOS id (or None for fixed-length runs) for the duration of a measurement.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator

from reprogrid.errors import UserError
from reprogrid.specdec.theory import check_gamma

DRAFTER_WARPERS = ("once", "library")
_WARPER_NAMES = ("TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "TopHLogitsWarper",
                 "MinPLogitsWarper", "TypicalLogitsWarper", "EpsilonLogitsWarper", "EtaLogitsWarper")


@contextlib.contextmanager
def _candidate_generator_hook(verifier, change: Callable[[Any], None]) -> Iterator[None]:
    """Call ``change(generator)`` on every candidate generator ``verifier`` creates, for the block.

    Wraps ``_get_candidate_generator`` on this model instance only (a previous instance wrapper is kept and
    called); restored on exit, so other models and threads are untouched."""
    had_own = "_get_candidate_generator" in vars(verifier)
    previous = vars(verifier).get("_get_candidate_generator")
    original = verifier._get_candidate_generator  # bound method (or a previous instance wrapper)

    def patched(*args, **kwargs):
        generator = original(*args, **kwargs)
        change(generator)
        return generator

    verifier._get_candidate_generator = patched
    try:
        yield
    finally:
        if had_own:
            verifier._get_candidate_generator = previous
        else:
            del verifier._get_candidate_generator


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

    def record(generator) -> None:
        update = generator.update_candidate_strategy

        def recording_update(input_ids, scores, num_matches):
            steps.append((int(scores.shape[1]) - 1, int(num_matches)))
            return update(input_ids, scores, num_matches)

        generator.update_candidate_strategy = recording_update

    with _candidate_generator_hook(verifier, record):
        yield steps


@contextlib.contextmanager
def fixed_draft_length(drafter, gamma: int) -> Iterator[None]:
    """Set a constant draft length on ``drafter.generation_config`` (generate() ignores these as kwargs); restore."""
    gamma = check_gamma(gamma)
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

    def adjust(generator) -> None:
        processors = getattr(generator, "logits_processor", None)
        if processors is None:
            return
        if mode == "once":
            kept = [p for p in processors if type(p).__name__ not in _WARPER_NAMES]
            generator.logits_processor = type(processors)(kept) if not isinstance(processors, list) else kept
        factor = 1.0
        for p in generator.logits_processor:
            if type(p).__name__ == "TemperatureLogitsWarper":
                factor *= float(p.temperature)
        info["extra_temperature"] = factor

    with _candidate_generator_hook(verifier, adjust):
        yield info


def eos_ids(eos) -> set:
    """The EOS ids of an ``eos_token_id`` setting (an id, a list of ids, or None) as a set."""
    return set(eos if isinstance(eos, (list, tuple)) else ([] if eos is None else [eos]))


def generation_kwargs(model, tokenizer, max_new_tokens: int, do_sample: bool, temperature: float | None,
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
