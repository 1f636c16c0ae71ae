"""The speed-up model of speculative decoding, greedy step replay, step summaries (definitions: the package
docstring), and the checks of the arguments they share with the measurement modules."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from reprogrid.errors import UserError


def check_gamma(gamma: Any) -> int:
    """Draft tokens per verifier step: an integer >= 1 (UserError otherwise)."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, np.integer)) or gamma < 1:
        raise UserError(f"must be an integer >= 1 (draft tokens per verifier step), got {gamma!r}", field="gamma")
    return int(gamma)


def check_alpha(alpha: Any) -> np.ndarray:
    a = np.asarray(alpha, dtype=float)
    if not np.all(np.isfinite(a)) or np.any(a < 0) or np.any(a > 1):
        raise UserError(f"must lie in [0, 1], got {alpha!r}", field="alpha")
    return a


def check_temperature(value: Any, field: str = "temperature") -> float:
    """A finite number > 0 (not a bool)."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise UserError(f"must be a number > 0, got {value!r}", field=field)
    return value


def check_max_new_tokens(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"must be an integer >= 1, got {value!r}", field="max_new_tokens")
    return value


def _scalar(x: np.ndarray):
    return float(x) if np.ndim(x) == 0 else x


def expected_tokens_per_step(alpha, gamma: int):
    """Expected tokens per verifier step, (1 - alpha^(gamma+1)) / (1 - alpha); gamma + 1 at alpha = 1.

    Computed as sum_{k=0..gamma} alpha^k, which is the same value without the 0/0 at alpha = 1.
    Accepts a scalar or an array of alphas.
    """
    gamma = check_gamma(gamma)
    a = check_alpha(alpha)
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
    gamma = check_gamma(gamma)
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
    """Acceptance summaries of a list of (drafted, accepted) verifier steps (see the package docstring).

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
