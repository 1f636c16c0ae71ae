"""Speculative decoding: theory, analytic acceptance, instrumented assisted generation, disparity, CLI.

Models are tiny randomly initialised Qwen2 networks (seeded), with a byte-level tokenizer of 259 tokens whose
LM head is padded to 272 rows, so the padding logic is exercised as with Qwen2.5 (151665 tokens, 151936 rows).
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from reprogrid.specdec.acceptance import analytic_acceptance  # noqa: E402
from reprogrid.specdec.disparity import disparity  # noqa: E402
from reprogrid.specdec.hooks import fixed_draft_length, record_verifier_steps  # noqa: E402
from reprogrid.specdec.measure import measure_assisted  # noqa: E402
from reprogrid.specdec.pairs import (NOT_MEASURED, check_pair, pair_problem, refusal, size_problem,  # noqa: E402
                                     tokenizer_problem)
from reprogrid.specdec.prompts import encode_prompt, load_prompts, validate_prompts, workload_order  # noqa: E402
from reprogrid.specdec.study import STUDY_COLUMNS, run_study  # noqa: E402
from reprogrid.specdec.theory import (expected_speedup, expected_tokens_per_step, replay_greedy_steps,  # noqa: E402
                                      summarize_steps)
from conftest import byte_tokenizer  # noqa: E402
from reprogrid.errors import UserError  # noqa: E402

torch.set_num_threads(1)

VOCAB = 272
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tok():
    t = byte_tokenizer()
    t.chat_template = CHAT_TEMPLATE
    assert len(t) == 259
    return t


def make_model(seed: int = 0, vocab: int = VOCAB):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=1024,
                      initializer_range=0.2, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 256
    return model


def noisy_copy(model, scale: float, seed: int = 1):
    """Same architecture, weights + N(0, (scale * std(param))^2): a drafter with 0 < alpha < 1."""
    drafter = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in drafter.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale * p.std().clamp_min(1e-3))
    return drafter


@pytest.fixture(scope="module")
def verifier():
    return make_model(0)


@pytest.fixture(scope="module")
def drafter(verifier):
    return noisy_copy(verifier, 0.03)


@pytest.fixture(scope="module")
def twin(verifier):
    return copy.deepcopy(verifier)  # a separate object with the same weights


def ids(tok, text):
    return torch.tensor([tok(text)["input_ids"]])


PROMPTS = ["The quick brown fox", "def fib(n):", "Bonjour, comment", "Summarize: the council voted",
           "Why is the sky blue?", "Hi! I just moved"]


# ---------------------------------------------------------------------------------------------- theory


def test_leviathan_reference_value():
    assert round(expected_speedup(0.8, 5, 0.0), 2) == 3.69
    assert expected_tokens_per_step(0.8, 5) == pytest.approx((1 - 0.8 ** 6) / 0.2, rel=1e-12)
    assert expected_speedup(0.8, 5, 0.05) == pytest.approx(3.68928 / 1.25, rel=1e-5)


def test_alpha_limits_and_monotonicity():
    for gamma in (1, 4, 7):
        assert expected_tokens_per_step(1.0, gamma) == gamma + 1
        assert expected_tokens_per_step(1 - 1e-9, gamma) == pytest.approx(gamma + 1, rel=1e-6)
        assert expected_tokens_per_step(0.0, gamma) == 1.0
        grid = np.linspace(0, 1, 101)
        values = expected_tokens_per_step(grid, gamma)
        assert values.shape == grid.shape and np.all(np.diff(values) > 0)
        speed = expected_speedup(grid, gamma, 0.1)
        assert np.all(np.diff(speed) > 0)
    # more drafting helps at alpha near 1, hurts at alpha 0 when drafting costs time
    assert expected_speedup(0.95, 8, 0.02) > expected_speedup(0.95, 2, 0.02)
    assert expected_speedup(0.0, 8, 0.1) < expected_speedup(0.0, 2, 0.1) < 1


@pytest.mark.parametrize("gamma", [0, -1, 2.5, True, "4"])
def test_bad_gamma(gamma):
    with pytest.raises(UserError, match="gamma"):
        expected_tokens_per_step(0.5, gamma)


def test_bad_alpha_and_c():
    with pytest.raises(UserError, match="alpha"):
        expected_tokens_per_step(1.2, 4)
    with pytest.raises(UserError, match="alpha"):
        expected_tokens_per_step(float("nan"), 4)
    with pytest.raises(UserError, match="c:"):
        expected_speedup(0.5, 4, -0.1)


def test_replay_and_step_summary_by_hand():
    m = [1, 1, 0, 1, 1, 1, 1, 0, 0, 1]
    # gamma 3, N = 10: t=0 run 2 -> (3,2), t=3 run 4 capped 3 -> (3,3), t=7 run 0 -> (2,0) [cap 10-7-1=2],
    # t=8 run 0 -> (1,0), t=9 drafted 0 -> (0,0)
    steps = replay_greedy_steps(m, 3)
    assert steps == [(3, 2), (3, 3), (2, 0), (1, 0), (0, 0)]
    assert sum(a + 1 for _, a in steps) == len(m)
    s = summarize_steps(steps, 3)
    # A = 5, R = 3 (steps 1, 3, 4 rejected); step with 0 drafted is uninformative
    assert s["alpha_empirical"] == pytest.approx(5 / 8)
    assert s["tokens_per_step"] == pytest.approx(10 / 5)
    assert s["tokens_per_full_step"] == pytest.approx((3 + 4) / 2)
    # EOS: continuation of 4 tokens out of a budget of 10; the step holding the EOS is cropped
    assert replay_greedy_steps([1, 1, 1, 1], 3, max_new_tokens=10) == [(3, 3)]  # EOS is the bonus token
    eos_steps = replay_greedy_steps([1, 1, 1, 1], 5, max_new_tokens=10)
    assert eos_steps == [(5, 3)]  # 4 tokens in one step: 3 accepted + the EOS cropped, no bonus
    assert math.isnan(summarize_steps(eos_steps, 5, last_censored=True)["alpha_empirical"])


# ---------------------------------------------------------------------------------------------- analytic


def test_identical_drafter_analytic_is_one(tok, verifier, twin):
    prompt = ids(tok, PROMPTS[0])
    cont = verifier.generate(prompt, max_new_tokens=24, do_sample=False)[0, prompt.shape[1]:]
    an = analytic_acceptance(verifier, twin, prompt, cont)
    assert an["n_positions"] == 24 and len(an["alphas"]) == 24
    assert an["alpha"] == pytest.approx(1.0, abs=1e-6)
    assert min(an["alphas"]) > 1 - 1e-6
    assert an["alpha_greedy"] == 1.0
    assert an["kl"] == pytest.approx(0.0, abs=1e-6)
    assert an["cross_entropy"] == pytest.approx(an["verifier_entropy"], abs=1e-5)
    assert an["continuation_is_verifier_argmax"] == 1.0


def test_noisy_drafter_analytic(tok, verifier, drafter):
    prompt = ids(tok, PROMPTS[1])
    cont = verifier.generate(prompt, max_new_tokens=40, do_sample=False)[0, prompt.shape[1]:]
    an = analytic_acceptance(verifier, drafter, prompt, cont)
    assert 0.5 < an["alpha"] < 1 and 0 < an["alpha_greedy"] < 1
    assert all(0 <= a <= 1 for a in an["alphas"])
    assert an["kl"] > 0 and an["cross_entropy"] > an["verifier_entropy"]
    assert an["cross_entropy"] - an["verifier_entropy"] == pytest.approx(an["kl"], rel=1e-4)
    # alpha = 1 - TV; Pinsker: TV <= sqrt(KL / 2) holds per position, hence for the means (Jensen)
    assert 1 - an["alpha"] <= math.sqrt(an["kl"] / 2) + 1e-6
    # sharper distributions (lower temperature) change alpha but not argmax agreement
    cold = analytic_acceptance(verifier, drafter, prompt, cont, temperature=0.5)
    assert cold["alpha_greedy"] == an["alpha_greedy"] and cold["alpha"] != pytest.approx(an["alpha"])


def test_vocab_padding_and_mismatch(tok, verifier):
    padded = copy.deepcopy(verifier)
    padded.resize_token_embeddings(VOCAB + 8)  # same real rows, 8 more padding rows
    prompt, cont = ids(tok, "abc"), ids(tok, " defgh")
    an = analytic_acceptance(verifier, padded, prompt, cont, vocab_size=len(tok))
    assert an["vocab_compared"] == len(tok)
    assert an["alpha"] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(UserError, match="vocab"):
        analytic_acceptance(verifier, padded, prompt, cont)  # size unknown: cannot tell padding
    with pytest.raises(UserError, match="different-tokenizer"):
        analytic_acceptance(verifier, padded, prompt, cont, vocab_size=VOCAB + 4)
    with pytest.raises(UserError, match="different-tokenizer"):
        measure_assisted(verifier, padded, tok, prompt, 4, 8)
    with pytest.raises(UserError, match="temperature"):
        analytic_acceptance(verifier, verifier, prompt, cont, temperature=0)


def test_one_refusal_for_every_vocabulary_mismatch(tmp_path, tok, verifier):
    """Loaded models, LM-head padding, model directories and tokenizers: one refusal text, from pairs.refusal."""
    wide = copy.deepcopy(verifier)
    wide.resize_token_embeddings(VOCAB + 16)
    sizes = size_problem(VOCAB, VOCAB + 16)
    assert sizes == f"verifier vocabulary {VOCAB} != drafter vocabulary {VOCAB + 16}: {NOT_MEASURED}"
    assert size_problem(VOCAB, VOCAB) is None and size_problem(None, VOCAB) is None
    with pytest.raises(UserError) as exc:
        check_pair(verifier, wide)
    assert str(exc.value) == f"vocab: {sizes}"
    assert tokenizer_problem({"a": 0}, {"a": 0}) is None
    assert tokenizer_problem({"a": 0}, {"b": 0}) == refusal("verifier and drafter tokenizers differ")
    for m, name in ((verifier, "v"), (wide, "wide")):
        m.save_pretrained(tmp_path / name)
    assert pair_problem(tmp_path / "v", tmp_path / "wide") == sizes
    assert pair_problem(tmp_path / "v", tmp_path / "v") is None


# ---------------------------------------------------------------------------------------------- assisted


def test_hooks_are_scoped_and_restored(verifier, drafter):
    before = (drafter.generation_config.num_assistant_tokens,
              drafter.generation_config.num_assistant_tokens_schedule,
              drafter.generation_config.assistant_confidence_threshold)
    with fixed_draft_length(drafter, 3), record_verifier_steps(verifier) as steps:
        assert drafter.generation_config.num_assistant_tokens == 3
        assert "_get_candidate_generator" in vars(verifier)
    assert steps == []
    assert "_get_candidate_generator" not in vars(verifier)
    assert (drafter.generation_config.num_assistant_tokens,
            drafter.generation_config.num_assistant_tokens_schedule,
            drafter.generation_config.assistant_confidence_threshold) == before
    with pytest.raises(UserError, match="gamma"):
        measure_assisted(verifier, drafter, None, torch.tensor([[1, 2, 3]]), 0, 8)


def test_identical_drafter_accepts_everything(tok, verifier, twin):
    m = measure_assisted(verifier, twin, tok, ids(tok, PROMPTS[2]), gamma=4, max_new_tokens=20,
                            stop_at_eos=False, timing_steps=2)
    assert m["outputs_identical"] is True and m["new_tokens"] == 20
    assert m["steps"] == [(4, 4)] * 4  # 20 tokens = 4 steps of gamma + 1
    assert m["tokens_per_step"] == 5 and m["tokens_per_full_step"] == 5
    assert m["alpha_empirical"] == 1.0
    assert m["analytic"]["alpha"] == pytest.approx(1.0, abs=1e-6)
    assert m["expected_tokens_per_step"] == pytest.approx(5.0, abs=1e-5)
    assert m["replay_matches_observed"] is True
    assert m["c"] > 0 and m["time_plain_s"] > 0 and m["time_assisted_s"] > 0


@pytest.fixture(scope="module")
def greedy_runs(tok, verifier, drafter):
    return [measure_assisted(verifier, drafter, tok, ids(tok, p), gamma=4, max_new_tokens=60,
                                stop_at_eos=False, timing_steps=2) for p in PROMPTS]


def test_greedy_invariance(greedy_runs):
    """Greedy speculative decoding must return exactly the verifier's greedy output."""
    for m in greedy_runs:
        assert m["new_tokens"] == 60
        assert m["assisted_ids"] == m["plain_ids"]
        assert m["outputs_identical"] is True
    # the drafter is imperfect, so this is not trivially true
    assert any(a < d for m in greedy_runs for d, a in m["steps"])


def test_recorded_steps_equal_replay_of_teacher_forced_matches(greedy_runs):
    """Per-step accepted counts are determined by argmax matches along the verifier's greedy path."""
    for m in greedy_runs:
        assert [a for _, a in m["steps"]] == [a for _, a in m["steps_replayed"]]
        assert [d for d, _ in m["steps"]] == [d for d, _ in m["steps_replayed"]]  # no EOS here
        assert sum(a + 1 for _, a in m["steps"]) == m["new_tokens"]


def test_tokens_per_step_match_theory(greedy_runs):
    """Pooled tokens per full step vs E(alpha_greedy, gamma).

    Tolerance: under the i.i.d. model each full step yields 1 + min(Geometric, gamma) tokens; with pooled alpha
    and n full steps (about 130 here) the standard error is sd / sqrt(n), about 0.13 tokens. Match events along
    one greedy path are not i.i.d. (runs cluster, and steps start right after a rejection), which inflates the
    true error, so the test allows 4 standard errors (about 0.53; the observed gap is below 0.1). That still
    rejects the usual mistakes: an off-by-one in E (a shift of ~1 token), or using alpha_analytic (about 0.87
    here, E ~ 3.8) instead of the greedy match rate (about 0.67, E ~ 2.6).
    """
    gamma = 4
    matches = [x for m in greedy_runs for x in m["analytic"]["matches"]]
    alpha = float(np.mean(matches))
    full = [a + 1 for m in greedy_runs for d, a in m["steps"] if d == gamma]
    n = len(full)
    observed = float(np.mean(full))
    expected = expected_tokens_per_step(alpha, gamma)
    k = np.arange(gamma + 1)
    pk = np.where(k < gamma, alpha ** k * (1 - alpha), alpha ** gamma)
    sd_iid = math.sqrt(float(np.sum(pk * (k + 1) ** 2) - np.sum(pk * (k + 1)) ** 2))
    tol = 4 * sd_iid / math.sqrt(n)
    assert 0.4 < alpha < 0.95 and n >= 60
    assert abs(observed - expected) < tol, (observed, expected, tol, alpha, n)
    alpha_analytic = float(np.mean([x for m in greedy_runs for x in m["analytic"]["alphas"]]))
    assert abs(observed - expected_tokens_per_step(alpha_analytic, gamma)) > tol  # the wrong alpha is detectable
    # the censored-geometric estimate A / (A + R) recovers the match rate
    a_tot = sum(a for m in greedy_runs for d, a in m["steps"] if d > 0)
    r_tot = sum(1 for m in greedy_runs for d, a in m["steps"] if 0 < d and a < d)
    assert a_tot / (a_tot + r_tot) == pytest.approx(alpha, abs=0.1)


def test_speculative_sampling_matches_analytic_alpha(tok, verifier, drafter):
    """Exact speculative sampling accepts a draft token with probability sum min(p_T, q_T) on average.

    Pooled over 3 prompts x 80 tokens (about 200 accept/reject events): the binomial standard error of A / (A + R)
    is about 0.03, so 0.1 is more than 3 standard errors.
    """
    runs = [measure_assisted(verifier, drafter, tok, ids(tok, p), gamma=3, max_new_tokens=80, do_sample=True,
                                temperature=0.7, seed=3, stop_at_eos=False, timing_steps=1) for p in PROMPTS[:3]]
    m = runs[0]
    assert m["decoding"] == "sample" and m["temperature"] == 0.7 and m["drafter_temperature"] == 0.7
    assert m["outputs_identical"] is None and m["replay_matches_observed"] is None
    assert m["analytic"]["temperature"] == 0.7
    assert all(sum(a + 1 for _, a in r["steps"]) == r["new_tokens"] == 80 for r in runs)
    a_tot = sum(a for r in runs for d, a in r["steps"] if d > 0)
    r_tot = sum(1 for r in runs for d, a in r["steps"] if 0 < d and a < d)
    alpha = float(np.mean([x for r in runs for x in r["analytic"]["alphas"]]))
    assert a_tot / (a_tot + r_tot) == pytest.approx(alpha, abs=0.1)
    again = measure_assisted(verifier, drafter, tok, ids(tok, PROMPTS[0]), gamma=3, max_new_tokens=80,
                                do_sample=True, temperature=0.7, seed=3, stop_at_eos=False, timing_steps=1,
                                analytic=False)
    assert again["assisted_ids"] == m["assisted_ids"] and again["steps"] == m["steps"]  # seeded


def test_sampling_with_identical_drafter_and_library_temperature(tok, verifier, twin):
    """transformers 5.23 applies the temperature twice to the drafter; ``once`` (default) restores the textbook."""
    kw = dict(gamma=3, max_new_tokens=60, do_sample=True, temperature=0.7, seed=5, stop_at_eos=False,
              timing_steps=1)
    once = measure_assisted(verifier, twin, tok, ids(tok, PROMPTS[4]), **kw)
    assert once["alpha_empirical"] == 1.0 and all(a == d for d, a in once["steps"])
    lib = measure_assisted(verifier, twin, tok, ids(tok, PROMPTS[4]), drafter_warpers_mode="library", **kw)
    assert lib["drafter_temperature"] == pytest.approx(0.49)  # 0.7 twice
    assert lib["analytic"]["alpha"] < 1 and lib["alpha_empirical"] < 1  # an identical drafter gets rejected
    assert "_get_candidate_generator" not in vars(verifier)
    with pytest.raises(UserError, match="drafter_warpers"):
        measure_assisted(verifier, twin, tok, ids(tok, "x"), drafter_warpers_mode="twice", **kw)


def test_pad_token_in_output_does_not_corrupt_drafter(tok, verifier, twin):
    """A generated token equal to the checkpoint's pad id must not be masked in the drafter (see
    ``_generation_kwargs``): with an identical drafter every draft is accepted even after such a token."""
    pad = verifier.generation_config.pad_token_id  # 256, a token the random models do emit
    m = measure_assisted(verifier, twin, tok, ids(tok, PROMPTS[0]), gamma=3, max_new_tokens=80, do_sample=True,
                            temperature=1.0, seed=3, stop_at_eos=False, timing_steps=1, analytic=False)
    assert pad in m["assisted_ids"][:-8]
    assert m["alpha_empirical"] == 1.0
    assert verifier.generation_config.pad_token_id == pad and twin.generation_config.pad_token_id == pad


# ---------------------------------------------------------------------------------------------- prompts, study


def test_builtin_prompts_and_mix():
    prompts = load_prompts()
    tasks = pd.Series([p["task"] for p in prompts]).value_counts()
    assert set(tasks.index) == {"code", "math", "translation_fr", "summarization", "qa", "chat"}
    assert tasks.min() >= 3 and tasks.max() <= 5
    single = workload_order(prompts, "single")
    inter = workload_order(prompts, "interleaved")
    assert [p["position"] for p in single] == list(range(len(prompts)))
    assert [p["task"] for p in single[:4]] == ["code"] * 4
    assert [p["task"] for p in inter[:6]] == ["code", "math", "translation_fr", "summarization", "qa", "chat"]
    assert sorted(p["prompt_id"] for p in inter) == sorted(p["prompt_id"] for p in prompts)
    with pytest.raises(UserError, match="mix"):
        workload_order(prompts, "random")


def test_prompt_validation(tmp_path):
    bad = [
        [{"task": "a", "prompt_id": "1"}],
        [{"task": "a", "prompt_id": "1", "text": "x", "messages": [{"role": "user", "content": "y"}]}],
        [{"task": "a", "prompt_id": "1", "text": "x"}, {"task": "a", "prompt_id": "1", "text": "z"}],
        [{"prompt_id": "1", "text": "x"}],
    ]
    for prompts in bad:
        with pytest.raises(UserError):
            validate_prompts(prompts)
    path = tmp_path / "p.jsonl"
    path.write_text('{"task": "a", "prompt_id": "1", "text": "x"}\nnot json\n')
    with pytest.raises(UserError, match="line 2"):
        load_prompts(path)
    with pytest.raises(UserError, match="cannot read"):
        load_prompts(tmp_path / "missing.jsonl")


def test_run_study_rows(tok, verifier, drafter):
    prompts = [p for p in load_prompts() if p["task"] in ("code", "qa")][:2] + [
        p for p in load_prompts() if p["task"] == "qa"][:2]
    prompts.append({"task": "chat", "prompt_id": "chat-m", "messages": [
        {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "How are you?"}]})
    df, steps = run_study(verifier, drafter, tok, prompts, gamma=3, max_new_tokens=16, mix="interleaved",
                             timing_steps=1, return_steps=True)
    assert list(df.columns) == STUDY_COLUMNS
    assert len(df) == len(prompts) and df["position"].tolist() == list(range(len(prompts)))
    assert df["task"].tolist()[:3] == ["code", "qa", "chat"]
    assert (df["mix"] == "interleaved").all() and (df["gamma"] == 3).all() and (df["decoding"] == "greedy").all()
    assert df["outputs_identical"].all() and df["replay_matches_observed"].all()
    for col in ("alpha_analytic", "alpha_greedy", "c", "speedup_measured", "speedup_predicted", "cross_entropy"):
        assert df[col].notna().all(), col
    assert steps.groupby("prompt_id").apply(lambda g: (g["accepted"] + 1).sum(), include_groups=False).to_dict() \
        == df.set_index("prompt_id")["new_tokens"].to_dict()
    chat_prompt = encode_prompt(tok, prompts[-1])
    assert tok.decode(chat_prompt[0]).endswith("<|im_start|>assistant\n")
    wrapped = encode_prompt(tok, {"task": "t", "prompt_id": "x", "text": "Hi"}, chat_template=True)
    assert tok.decode(wrapped[0]) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(UserError, match="decoding"):
        run_study(verifier, drafter, tok, prompts, decoding="beam")


# ---------------------------------------------------------------------------------------------- disparity


def test_disparity_known_values():
    df = pd.DataFrame({
        "task": ["a"] * 3 + ["b"] * 3 + ["c"] * 3,
        "speedup_measured": [1.0] * 3 + [2.0] * 3 + [3.0] * 3,
        "cross_entropy": [0.5] * 3 + [1.5] * 3 + [1.0] * 3,
    })
    d = disparity(df, n_boot=200, seed=1)
    assert d["groups"]["b"]["mean"] == 2.0 and d["groups"]["b"]["n"] == 3
    assert d["groups"]["b"]["ci_low"] == d["groups"]["b"]["ci_high"] == 2.0  # no within-task spread
    assert d["max_min_ratio"] == 3.0 and d["max_group"] == "c" and d["min_group"] == "a"
    assert d["cv"] == pytest.approx(np.std([1, 2, 3]) / 2)
    assert d["ce_variance"] == pytest.approx(np.var([0.5, 1.5, 1.0]))  # = 1/6
    assert d["ce_group_means"] == {"a": 0.5, "b": 1.5, "c": 1.0}
    assert "own definition" in d["ce_variance_definition"]
    json.dumps(d)  # serialisable as written by the CLI


def test_disparity_bootstrap_intervals():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"task": np.repeat(["x", "y"], 40),
                       "speedup_measured": np.r_[rng.normal(1.5, 0.2, 40), rng.normal(2.0, 0.2, 40)]})
    d1 = disparity(df, n_boot=1000, seed=7)
    d2 = disparity(df, n_boot=1000, seed=7)
    assert d1 == d2  # seeded
    for g in ("x", "y"):
        s = d1["groups"][g]
        assert s["ci_low"] < s["mean"] < s["ci_high"]
        # percentile interval close to the normal one, mean +- 1.96 sd / sqrt(n)
        assert s["ci_high"] - s["ci_low"] == pytest.approx(2 * 1.96 * s["sd"] / math.sqrt(40), rel=0.25)
    lo, hi = d1["max_min_ratio_ci"]
    assert lo < d1["max_min_ratio"] < hi
    assert d1["ce_variance"] is None  # no cross_entropy column
    with pytest.raises(UserError, match="column"):
        disparity(df, value="nope")
    with pytest.raises(UserError, match="finite"):
        disparity(df.assign(speedup_measured=np.nan))


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_theory_measure_summarize(tmp_path, tok, verifier, drafter, capsys):
    from reprogrid.cli import main

    assert main(["specdec", "theory", "--alpha", "0.8", "--gamma", "5"]) == 0
    assert "3.6893" in capsys.readouterr().out
    assert main(["specdec", "theory", "--alpha", "0.8", "--gamma", "0"]) == 2
    assert "gamma" in capsys.readouterr().err

    v_dir, d_dir = tmp_path / "v", tmp_path / "d"
    for model, path in ((verifier, v_dir), (drafter, d_dir)):
        model.save_pretrained(path)
        tok.save_pretrained(path)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"task": "a", "prompt_id": "a1", "text": "Hello there"}\n'
                       '{"task": "b", "prompt_id": "b1", "text": "def f(x):"}\n'
                       '{"task": "b", "prompt_id": "b2", "text": "Translate: cat"}\n')
    out = tmp_path / "out"
    rc = main(["specdec", "measure", "--verifier", str(v_dir), "--drafter", str(d_dir), "--prompts", str(prompts),
               "--gamma", "3", "--max-new-tokens", "10", "--no-eos", "--timing-steps", "1", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    df = pd.read_parquet(out / "specdec.parquet")
    assert len(df) == 3 and (df["new_tokens"] == 10).all() and df["outputs_identical"].all()
    steps = pd.read_parquet(out / "specdec_steps.parquet")
    assert set(steps.columns) == {"task", "prompt_id", "position", "step", "drafted", "accepted"}
    meta = json.loads((out / "specdec_meta.json").read_text())
    assert meta["gamma"] == 3 and meta["transformers"] == transformers.__version__

    assert main(["specdec", "summarize", str(out / "specdec.parquet"), "--out", str(tmp_path / "sum"),
                 "--n-boot", "50"]) == 0
    summary = json.loads((tmp_path / "sum" / "disparity.json").read_text())
    assert set(summary["groups"]) == {"a", "b"} and summary["value"] == "speedup_measured"

    capsys.readouterr()
    assert main(["specdec", "measure", "--verifier", str(tmp_path / "none"), "--drafter", str(d_dir),
                 "--out", str(out)]) == 2
    assert "config.json" in capsys.readouterr().err
