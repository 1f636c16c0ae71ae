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

Everything labelled "reprogrid's definition" in this package is its own choice: the fairness formula of
Sandler et al. (arXiv 2510.02128) is not public.

Modules, each below the ones after it in this list only where it imports them:

* ``theory``: E(alpha, gamma), the predicted speed-up, greedy step replay, step summaries, argument checks.
* ``pairs``: the one vocabulary check of a verifier/drafter pair (the shared-tokenizer assisted path), loading
  a pair of saved model directories.
* ``acceptance``: analytic (teacher-forced) acceptance, cross-entropy and KL of a pair on one continuation.
* ``hooks``: context managers around transformers' assisted generation (step recorder, fixed draft length,
  drafter warpers, special tokens) and the generation settings that pin what is measured.
* ``measure``: plain vs assisted generation of one prompt, timed and instrumented.
* ``prompts``: prompt files, the workload-mix order, encoding.
* ``study``: every prompt of one (pair, gamma, decoding, mix, chat) condition -> one table row per prompt.
* ``disparity``: per-task means with bootstrap intervals and across-task disparity measures.
* ``cells``: the config's ``specdec:`` section -> settings and measurement cells (the workflow's wildcards).
* ``runner``: one cell measured (transformers or vLLM) -> ``<cell>.parquet`` / ``.steps.parquet`` / ``.json``.
* ``collect``: cell tables -> ``specdec.parquet``, ``disparity.json``, and the attribution of the spread.
* ``mitigate``: the mitigation's settings, checks, prompt split, task selection and deficit-weighted schedule
  (reprogrid's own definition of the paper's s-CDF).
* ``distill``: distillation data from the verifier (greedy continuations, top-k log-probabilities, ``.npz``) and
  the top-k KL(verifier || drafter) objective.
* ``lora``: LoRA fine-tuning of the drafter through peft; the merged drafter saved and re-loaded with its checksum.
* ``compare``: before/after tables of two drafters -> disparity of each and paired changes with intervals.
* ``mitigate_run``: the mitigation end to end (``reprogrid specdec mitigate``, rule specdec_mitigate).
"""
