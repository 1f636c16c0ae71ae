"""Distillation data from the verifier, stored compactly, and the top-k KL objective (reprogrid's definition).

Data: for each training prompt, the verifier's greedy continuation (up to ``max_new_tokens``, stopping at EOS)
and, at every position that predicts a continuation token, the verifier's ``top_k`` most likely tokens with
their log-probabilities (log-softmax over the pair's shared vocabulary rows, float16). One ``.npz`` file holds
every example: token ids concatenated with offsets, the top-k arrays concatenated over positions.

Objective (reprogrid's own definition, not the paper's, which is not public): on the verifier's top-k support S
at each position, with p~ the verifier's probabilities renormalised on S and q the drafter's full-vocabulary
softmax,

    KL_k(p || q) = sum_{x in S} p~(x) (log p~(x) - log q(x))  =  KL(p~ || q~) - log q(S)  >= 0,

(q~ = q renormalised on S), zero exactly when the drafter puts all its mass on S in the verifier's proportions.
Averaged over positions (each position counts once).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reprogrid.errors import UserError
from reprogrid.io import atomic_path
from reprogrid.specdec.hooks import generation_kwargs, special_tokens

ARRAYS = ("tokens", "offsets", "prompt_lens", "example_task", "tasks", "prompt_ids", "topk_ids", "topk_logp",
          "position_offsets")


def verifier_continuation(verifier, tokenizer, prompt_ids, max_new_tokens: int) -> list[int]:
    """The verifier's greedy continuation of one prompt ([1, n] ids), stopping at EOS (the study's settings)."""
    import torch

    kw = generation_kwargs(verifier, tokenizer, max_new_tokens, False, None, True)
    prompt = prompt_ids.to(verifier.device)
    with special_tokens([verifier], kw["eos_token_id"], kw["pad_token_id"]), torch.inference_mode():
        out = verifier.generate(prompt, attention_mask=torch.ones_like(prompt), **kw)
    return out[0, prompt.shape[1]:].tolist()


def continuation_logits(model, seq, n_cont: int, vocab: int):
    """Logits (first ``vocab`` rows) at the ``n_cont`` positions of ``seq`` ([1, n]) that predict its last tokens."""
    logits = model(seq.to(model.device)).logits[0]
    return logits[logits.shape[0] - n_cont - 1: -1, :vocab]


def _topk(verifier, seq, n_cont: int, vocab: int, top_k: int):
    import torch

    with torch.inference_mode():
        logp = torch.log_softmax(continuation_logits(verifier, seq, n_cont, vocab).float(), dim=-1)
        values, indices = logp.topk(min(top_k, vocab), dim=-1)
    return indices.cpu().numpy().astype(np.int32), values.cpu().numpy().astype(np.float16)


def build_distillation(verifier, tokenizer, encoded: list[tuple[dict, object]], *, max_new_tokens: int,
                       top_k: int, vocab: int) -> dict:
    """Distillation arrays (``ARRAYS``) from (prompt, ids [1, n]) pairs; prompts whose continuation is empty
    (immediate EOS) are left out. ``vocab``: the pair's shared vocabulary rows (pairs.shared_vocab)."""
    import torch

    tasks: list[str] = []
    parts: dict[str, list] = {k: [] for k in ("tokens", "prompt_lens", "example_task", "prompt_ids", "topk_ids",
                                              "topk_logp")}
    for prompt, ids in encoded:
        cont = verifier_continuation(verifier, tokenizer, ids, max_new_tokens)
        if not cont:
            continue
        seq = torch.cat([ids.cpu(), torch.tensor([cont])], dim=1)
        top_ids, top_logp = _topk(verifier, seq, len(cont), vocab, top_k)
        if prompt["task"] not in tasks:
            tasks.append(prompt["task"])
        parts["tokens"].append(seq[0].numpy().astype(np.int32))
        parts["prompt_lens"].append(int(ids.shape[1]))
        parts["example_task"].append(tasks.index(prompt["task"]))
        parts["prompt_ids"].append(prompt["prompt_id"])
        parts["topk_ids"].append(top_ids)
        parts["topk_logp"].append(top_logp)
    if not parts["tokens"]:
        raise UserError("the verifier ended every training prompt at once (no continuation to distil)",
                        field="training prompts")
    lens = [len(t) for t in parts["tokens"]]
    n_pos = [len(t) for t in parts["topk_ids"]]
    return {"tokens": np.concatenate(parts["tokens"]), "offsets": np.concatenate([[0], np.cumsum(lens)]),
            "prompt_lens": np.array(parts["prompt_lens"], dtype=np.int64),
            "example_task": np.array(parts["example_task"], dtype=np.int64), "tasks": np.array(tasks),
            "prompt_ids": np.array(parts["prompt_ids"]), "topk_ids": np.concatenate(parts["topk_ids"]),
            "topk_logp": np.concatenate(parts["topk_logp"]),
            "position_offsets": np.concatenate([[0], np.cumsum(n_pos)])}


def n_examples(data: dict) -> int:
    return len(data["prompt_lens"])


def example(data: dict, i: int) -> dict:
    """Example ``i``: ``seq`` (ids), ``n_cont`` (continuation length), its task, top-k ids and log-probs."""
    lo, hi = int(data["offsets"][i]), int(data["offsets"][i + 1])
    plo, phi = int(data["position_offsets"][i]), int(data["position_offsets"][i + 1])
    return {"seq": data["tokens"][lo:hi], "n_cont": phi - plo, "task": str(data["tasks"][data["example_task"][i]]),
            "topk_ids": data["topk_ids"][plo:phi], "topk_logp": data["topk_logp"][plo:phi]}


def save_distillation(data: dict, path: str | Path) -> Path:
    """Write the arrays to one compressed ``.npz`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **{k: data[k] for k in ARRAYS})
    return path


def load_distillation(path: str | Path) -> dict:
    """Read a file written by :func:`save_distillation` (UserError when it is not one)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in ARRAYS}
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"not a distillation file ({exc})", field=str(path)) from None
    return data


def topk_kl(drafter_logits, topk_ids, topk_logp):
    """Per-position KL_k(p || q) (module docstring) from drafter logits [n, V] and the stored top-k arrays."""
    import torch

    logq = torch.log_softmax(drafter_logits.float(), dim=-1)
    ids = torch.as_tensor(np.asarray(topk_ids, dtype=np.int64), device=logq.device)
    logp = torch.log_softmax(torch.as_tensor(np.asarray(topk_logp, dtype=np.float32), device=logq.device), dim=-1)
    return (logp.exp() * (logp - logq.gather(1, ids))).sum(-1)


def example_kl(model, data: dict, i: int, vocab: int):
    """Mean KL_k over the continuation positions of example ``i`` (a scalar tensor, differentiable)."""
    import torch

    ex = example(data, i)
    seq = torch.as_tensor(ex["seq"].astype(np.int64))[None, :]
    logits = continuation_logits(model, seq, ex["n_cont"], vocab)
    return topk_kl(logits, ex["topk_ids"], ex["topk_logp"]).mean()


def kl_by_task(model, data: dict, vocab: int) -> dict[str, float]:
    """Mean KL_k per task over its examples (positions of an example averaged first), without gradients."""
    import torch

    sums: dict[str, list[float]] = {}
    with torch.inference_mode():
        for i in range(n_examples(data)):
            task = str(data["tasks"][data["example_task"][i]])
            sums.setdefault(task, []).append(float(example_kl(model, data, i, vocab)))
    return {task: float(np.mean(v)) for task, v in sums.items()}
