"""The mitigation: fine-tune only the drafter toward the verifier on the tasks it serves worst, then re-measure.

This is reprogrid's own definition of the paper's s-CDF ("stochastic corrective drafter fine-tuning", Sandler et
al., arXiv 2510.02128); the paper's exact objective and fairness formula are not public.

Steps (``reprogrid specdec mitigate``):

1. Split: per task, in prompt-file order, the first ``train_per_task`` prompts train, the next
   ``heldout_per_task`` are held out (never seen in training or selection).
2. Distillation data (:mod:`reprogrid.specdec.distill`): the verifier's greedy continuation of every training
   prompt and its top-k log-probabilities at each position.
3. Selection: alpha_t = mean over task t's training prompts of the teacher-forced acceptance sum_x min(p, q)
   (:func:`reprogrid.specdec.acceptance.analytic_acceptance`) of the original drafter on those continuations.
   Deficit d_t = max_s alpha_s - alpha_t. Under-served: the tasks with alpha_t below the mean of alpha over tasks
   (or, with ``under_served`` = N > 0, the N lowest).
4. Task schedule (reprogrid's s-CDF, static): each training example is drawn by first drawing an under-served task
   with probability w_t = (d_t + floor)^power / sum_s (d_s + floor)^power (defaults floor 0.01, power 1: the
   weight grows linearly with the deficit; floor keeps a task with a tiny deficit in play), then one of that
   task's examples uniformly. Weights are fixed from the original drafter's deficits for the whole run.
5. Training (:mod:`reprogrid.specdec.lora`): LoRA (rank ``lora_rank``, alpha ``lora_alpha``) on the drafter's
   attention and MLP projections through ``peft``; loss KL_k(verifier || drafter) on the verifier's top-k support;
   ``budget`` training examples in all, ``batch_size`` per step, so budget // batch_size optimiser steps.
6. The merged drafter is saved as a new prepared directory with its checksum, re-loaded through that checksum, and
   both drafters are measured on the held-out prompts of every task (:func:`reprogrid.specdec.study.run_study`,
   greedy, fixed gamma) and compared (:mod:`reprogrid.specdec.compare`), including the check that the verifier's
   greedy outputs are identical with either drafter.

Every setting is checked (one-line UserError) before any model is loaded.
"""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from reprogrid.errors import UserError
from reprogrid.specdec.pairs import pair_problem, require_model_dir
from reprogrid.specdec.prompts import by_task, load_prompts
from reprogrid.specdec.theory import check_gamma, check_max_new_tokens

SCHEDULE = ("reprogrid's own definition of the paper's s-CDF: tasks drawn with probability proportional to "
            "(deficit + floor)^power, deficit = best task's training acceptance - the task's; static weights")


@dataclass
class MitigationSettings:
    verifier: str
    drafter: str
    out: str
    prompts: str | None = None
    tasks: list[str] | None = None
    train_per_task: int = 2
    heldout_per_task: int = 2
    under_served: int = 0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    top_k: int = 20
    distill_tokens: int = 32
    budget: int = 64
    batch_size: int = 4
    lr: float = 1e-3
    deficit_power: float = 1.0
    deficit_floor: float = 0.01
    gamma: int = 4
    max_new_tokens: int = 32
    chat_template: bool = False
    timing_steps: int = 8
    n_boot: int = 1000
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"


def _int_at_least(value, low: int, flag: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise UserError(f"must be an integer >= {low}, got {value!r}", field=flag)
    return int(value)


def _positive(value, flag: str, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and (
        value >= 0 if allow_zero else value > 0)
    if not ok:
        raise UserError(f"must be a number {'>=' if allow_zero else '>'} 0, got {value!r}", field=flag)
    return float(value)


def check_numbers(s: MitigationSettings) -> None:
    _int_at_least(s.lora_rank, 1, "--lora-rank")
    _positive(s.lora_alpha, "--lora-alpha")
    _int_at_least(s.top_k, 1, "--top-k")
    _int_at_least(s.batch_size, 1, "--batch-size")
    budget = _int_at_least(s.budget, 0, "--budget")
    if budget < s.batch_size:
        raise UserError(f"{budget} training examples is too small for one step of --batch-size {s.batch_size}",
                        field="--budget")
    _positive(s.lr, "--lr")
    _positive(s.deficit_power, "--deficit-power")
    _positive(s.deficit_floor, "--deficit-floor", allow_zero=True)
    _int_at_least(s.train_per_task, 1, "--train-per-task")
    _int_at_least(s.heldout_per_task, 1, "--heldout-per-task")
    _int_at_least(s.under_served, 0, "--under-served")
    _int_at_least(s.distill_tokens, 1, "--distill-tokens")
    _int_at_least(s.timing_steps, 1, "--timing-steps")
    _int_at_least(s.n_boot, 1, "--n-boot")
    check_gamma(s.gamma)
    check_max_new_tokens(s.max_new_tokens)
    if s.device not in ("cpu", "cuda"):
        raise UserError(f"must be cpu or cuda, got {s.device!r}", field="--device")
    if s.dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"must be float32, bfloat16 or float16, got {s.dtype!r}", field="dtype")


def split_prompts(s: MitigationSettings) -> tuple[list[dict], list[dict]]:
    """(training prompts, held-out prompts) of the selected tasks (module docstring, step 1)."""
    where = s.prompts or "specdec_prompts.jsonl (built-in)"
    groups = by_task(load_prompts(s.prompts))
    tasks = s.tasks if s.tasks else list(groups)
    if len(set(tasks)) < 2:
        raise UserError(f"needs at least two distinct tasks to compare, got {', '.join(tasks) or 'none'}",
                        field=f"{where}: tasks")
    need = s.train_per_task + s.heldout_per_task
    train, heldout = [], []
    for task in tasks:
        have = groups.get(task, [])
        if not have:
            raise UserError(f"task '{task}' has no prompts (tasks in the file: {', '.join(groups)})",
                            field=f"{where}: tasks")
        if len(have) < need:
            raise UserError(f"task '{task}' has {len(have)} prompts; --train-per-task {s.train_per_task} + "
                            f"--heldout-per-task {s.heldout_per_task} need {need}", field=f"{where}: tasks")
        train += have[: s.train_per_task]
        heldout += have[s.train_per_task: need]
    return train, heldout


def check_settings(s: MitigationSettings) -> tuple[list[dict], list[dict]]:
    """Every check that needs no model (numbers, prompts, the pair's vocabulary from its files); the split."""
    check_numbers(s)
    train, heldout = split_prompts(s)
    require_model_dir(s.verifier, "--verifier")
    require_model_dir(s.drafter, "--drafter")
    problem = pair_problem(s.verifier, s.drafter)
    if problem is not None:
        raise UserError(problem, field="--drafter")
    out = Path(s.out)
    if out.resolve() in {Path(s.drafter).resolve(), Path(s.verifier).resolve()}:
        raise UserError("must not be a model directory of the pair", field="--out")
    return train, heldout


def select_tasks(alphas: dict[str, float], under_served: int, power: float, floor: float) -> dict:
    """Deficits, the under-served tasks and their sampling weights (module docstring, steps 3-4)."""
    if not alphas:
        raise UserError("no task has a training continuation", field="training prompts")
    best, mean = max(alphas.values()), float(np.mean(list(alphas.values())))
    deficits = {t: best - a for t, a in alphas.items()}
    ranked = sorted(alphas, key=lambda t: (alphas[t], t))
    if under_served:
        chosen = ranked[: min(under_served, len(ranked))]
    else:
        chosen = [t for t in ranked if alphas[t] < mean] or ranked[:1]
    raw = {t: (deficits[t] + floor) ** power for t in chosen}
    total = sum(raw.values())
    weights = ({t: v / total for t, v in raw.items()} if total > 0 else {t: 1.0 / len(chosen) for t in chosen})
    return {"alpha_train": alphas, "alpha_mean": mean, "alpha_best": best, "deficit": deficits,
            "under_served": chosen, "weights": weights, "schedule": SCHEDULE,
            "rule": f"{under_served} lowest" if under_served else "below the mean over tasks"}


def training_alphas(verifier, drafter, data: dict, vocab_size: int) -> dict[str, float]:
    """Per-task mean teacher-forced acceptance of ``drafter`` on the distillation continuations."""
    from reprogrid.specdec.acceptance import analytic_acceptance
    from reprogrid.specdec.distill import example, n_examples

    per_task: dict[str, list[float]] = {}
    for i in range(n_examples(data)):
        ex = example(data, i)
        n_prompt = int(data["prompt_lens"][i])
        seq = ex["seq"].astype(np.int64)
        an = analytic_acceptance(verifier, drafter, seq[:n_prompt], seq[n_prompt:], vocab_size=vocab_size)
        per_task.setdefault(ex["task"], []).append(an["alpha"])
    return {t: float(np.mean(v)) for t, v in per_task.items()}


def peak_memory_mb() -> float:
    """Peak resident memory of this process (ru_maxrss, KiB on Linux) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def settings_record(s: MitigationSettings) -> dict:
    return asdict(s)
