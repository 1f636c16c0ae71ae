"""LoRA fine-tuning of the drafter only (through ``peft``), task-weighted sampling, and the mitigated drafter saved
as a new prepared model directory with its own checksum and provenance.

Training (reprogrid's definition of the paper's s-CDF, see :mod:`reprogrid.specdec.mitigate` for the task
weights): ``steps`` optimiser steps of AdamW on the LoRA parameters; each step draws ``batch_size`` examples, each
by first drawing a task from the task weights (with replacement, ``numpy.random.default_rng(seed)``), then one of
that task's distillation examples uniformly; the loss is the mean over the batch of each example's mean top-k KL
(:func:`reprogrid.specdec.distill.topk_kl`). The verifier is never touched.

Saved drafter directory: the LoRA update merged into the weights (``merge_and_unload``), safetensors + tokenizer,
and ``reprogrid_model.json`` with ``weights_sha256`` (:func:`reprogrid.models.weights_digest`, as for every
prepared model), ``tokenizer_sha256``, the adapter's file checksums, the training settings and the provenance
stamp. :func:`load_mitigated` recomputes the weights checksum and refuses a directory whose weights changed;
:func:`load_adapter` does the same for the adapter's files before applying it to the original drafter.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np

from reprogrid.errors import UserError
from reprogrid.io import read_json, sha256_file, write_json
from reprogrid.specdec.distill import example_kl, n_examples

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MODEL_INFO = "reprogrid_model.json"


def lora_wrap(drafter, rank: int, alpha: float, seed: int):
    """A copy of ``drafter`` with LoRA adapters (rank ``rank``, scale alpha/rank) on the attention and MLP
    projections; only the adapters are trainable. The given drafter is left unchanged."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    present = {name.rsplit(".", 1)[-1] for name, _ in drafter.named_modules()}
    targets = [t for t in TARGET_MODULES if t in present]
    if not targets:
        raise UserError(f"the drafter has none of the LoRA target modules ({', '.join(TARGET_MODULES)})",
                        field="drafter")
    cfg = LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=0.0, bias="none", target_modules=targets,
                     task_type="CAUSAL_LM")
    return get_peft_model(copy.deepcopy(drafter), cfg)


def task_examples(data: dict) -> dict[str, np.ndarray]:
    """Example indices of each task in the distillation data."""
    return {str(t): np.flatnonzero(data["example_task"] == j) for j, t in enumerate(data["tasks"])}


def train_lora(model, data: dict, weights: dict[str, float], *, steps: int, batch_size: int, lr: float,
               vocab: int, seed: int, log=None) -> list[dict]:
    """Train the LoRA parameters of ``model`` (from :func:`lora_wrap`) in place; one history row per step
    (step, loss, tasks drawn). ``weights``: task -> sampling probability (tasks without examples dropped)."""
    import torch

    by_task = task_examples(data)
    tasks = [t for t in weights if t in by_task and len(by_task[t]) and weights[t] > 0]
    if not tasks:
        raise UserError("no distillation examples for the selected tasks", field="training prompts")
    probs = np.array([weights[t] for t in tasks], dtype=float)
    probs /= probs.sum()
    rng = np.random.default_rng(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    history = []
    for step in range(steps):
        drawn = [tasks[j] for j in rng.choice(len(tasks), size=batch_size, p=probs)]
        picks = [int(rng.choice(by_task[t])) for t in drawn]
        opt.zero_grad()
        loss = torch.stack([example_kl(model, data, i, vocab) for i in picks]).mean()
        loss.backward()
        opt.step()
        history.append({"step": step, "loss": float(loss.detach()), "tasks": ",".join(drawn)})
        if log is not None and (step % 10 == 0 or step == steps - 1):
            log(f"[mitigate] step {step + 1}/{steps}: loss {float(loss.detach()):.4f}")
    model.eval()
    return history


def _adapter_checksums(directory: Path) -> dict[str, str]:
    return {f.name: sha256_file(f) for f in sorted(directory.iterdir()) if f.is_file()}


def save_mitigated(model, tokenizer, out_dir: str | Path, info: dict, adapter_dir: str | Path | None = None) -> dict:
    """Save the adapter (``adapter_dir``, optional), then the merged drafter as a prepared directory ``out_dir``
    with ``reprogrid_model.json`` (checksums + ``info``); returns that provenance. Consumes ``model``."""
    from reprogrid.models import weights_digest

    out_dir = Path(out_dir)
    record = dict(info)
    if adapter_dir is not None:
        adapter_dir = Path(adapter_dir)
        shutil.rmtree(adapter_dir, ignore_errors=True)
        model.save_pretrained(adapter_dir)
        record["adapter"] = {"path": str(adapter_dir), "sha256": _adapter_checksums(adapter_dir)}
    merged = model.merge_and_unload()
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    record["weights_sha256"] = weights_digest(tmp)
    record["tokenizer_sha256"] = sha256_file(tmp / "tokenizer.json") if (tmp / "tokenizer.json").exists() else None
    write_json(tmp / MODEL_INFO, record)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return record


def verify_mitigated(directory: str | Path) -> dict:
    """The directory's provenance, after checking its weights against the recorded ``weights_sha256``."""
    from reprogrid.models import weights_digest

    directory = Path(directory)
    info = read_json(directory / MODEL_INFO, what="mitigated drafter provenance")
    digest = weights_digest(directory)
    if digest != info.get("weights_sha256"):
        raise UserError(f"weights sha256 is {digest}, recorded {info.get('weights_sha256')}; refusing to use it",
                        field=str(directory))
    return info


def verify_adapter(adapter_dir: str | Path, drafter_dir: str | Path) -> dict[str, str]:
    """The adapter's file checksums, after checking them against those the mitigated drafter recorded."""
    info = verify_mitigated(drafter_dir)
    recorded = (info.get("adapter") or {}).get("sha256")
    if not recorded:
        raise UserError("records no adapter checksums", field=f"{Path(drafter_dir) / MODEL_INFO}")
    adapter_dir = Path(adapter_dir)
    have = _adapter_checksums(adapter_dir) if adapter_dir.is_dir() else {}
    bad = sorted(n for n in set(recorded) | set(have) if recorded.get(n) != have.get(n))
    if bad:
        raise UserError(f"adapter files {', '.join(bad)} do not match the checksums recorded in {drafter_dir}; "
                        "refusing to use it", field=str(adapter_dir))
    return have


def load_adapter(base, adapter_dir: str | Path, drafter_dir: str | Path):
    """``base`` (the original drafter) with the saved LoRA adapter applied, its checksums verified first."""
    from peft import PeftModel

    verify_adapter(adapter_dir, drafter_dir)
    return PeftModel.from_pretrained(base, Path(adapter_dir))


def load_mitigated(directory: str | Path, dtype: str = "float32"):
    """(model, tokenizer, provenance) of a mitigated drafter directory, its checksum verified first."""
    from reprogrid.models import load_prepared

    info = verify_mitigated(directory)
    model, tok = load_prepared(Path(directory), dtype=dtype)
    return model, tok, info


def training_kl(model, data: dict, vocab: int) -> float:
    """Mean top-k KL over every distillation example (examples weighted equally)."""
    import torch

    with torch.inference_mode():
        return float(np.mean([float(example_kl(model, data, i, vocab)) for i in range(n_examples(data))]))
