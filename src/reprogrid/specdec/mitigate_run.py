"""Running the mitigation end to end (definitions: :mod:`reprogrid.specdec.mitigate`).

Outputs in the ``--out`` directory:

* ``distill.npz``: the verifier's continuations and top-k log-probabilities on the training prompts;
* ``training.parquet``: one row per optimiser step (loss, tasks drawn);
* ``adapter/``: the LoRA adapter (peft format); ``drafter/``: the merged drafter, a prepared model directory
  with its own ``reprogrid_model.json`` (weights sha256, adapter checksums, provenance);
* ``before.parquet`` / ``after.parquet``: the study table (``reprogrid.specdec.study.STUDY_COLUMNS`` plus
  ``drafter``) of the original and the mitigated drafter on the held-out prompts of every task;
* ``mitigation.json``: settings, selection and schedule, training KL per task before/after, the comparison
  (:func:`reprogrid.specdec.compare.compare`), the verifier-output check, ``well_served`` (the held-out acceptance
  change of the tasks not trained on, with its interval), wall time and peak memory.
"""

from __future__ import annotations

import time
from pathlib import Path

from reprogrid.io import read_json, sha256_file, write_json, write_parquet
from reprogrid.provenance import stamp
from reprogrid.specdec.compare import compare
from reprogrid.specdec.distill import build_distillation, kl_by_task, save_distillation
from reprogrid.specdec.lora import load_mitigated, lora_wrap, save_mitigated, train_lora
from reprogrid.specdec.mitigate import (MitigationSettings, check_settings, peak_memory_mb, select_tasks,
                                        settings_record, training_alphas)
from reprogrid.specdec.prompts import encode_prompt
from reprogrid.specdec.study import run_study


def _source_info(directory: str) -> dict:
    """What identifies a model directory: its path and, when it is a prepared one, its recorded checksums."""
    info = {"path": str(Path(directory).resolve())}
    record = Path(directory, "reprogrid_model.json")
    if record.is_file():
        data = read_json(record, what="model provenance")
        info.update({k: data.get(k) for k in ("model", "prepared_key", "weights_sha256", "tokenizer_sha256")})
    return info


def _place(model, s: MitigationSettings):
    """The model on the settings' device and dtype (loaded on the CPU in float32)."""
    import torch

    return model.to(device=s.device, dtype=getattr(torch, s.dtype)).eval()


def _distil(s: MitigationSettings, verifier, tok, train: list[dict], vocab: int, out: Path, log) -> dict:
    log(f"[mitigate] distillation data: {len(train)} training prompts, top-{s.top_k}, {s.distill_tokens} tokens")
    encoded = [(p, encode_prompt(tok, p, s.chat_template)) for p in train]
    data = build_distillation(verifier, tok, encoded, max_new_tokens=s.distill_tokens, top_k=s.top_k, vocab=vocab)
    save_distillation(data, out / "distill.npz")
    return data


def _fine_tune(s: MitigationSettings, drafter, data: dict, selection: dict, vocab: int, log) -> tuple:
    """LoRA-wrapped copy of the drafter trained on the schedule; (model, history, KL per task before/after)."""
    student = lora_wrap(drafter, s.lora_rank, s.lora_alpha, s.seed)
    kl_before = kl_by_task(student, data, vocab)
    steps = s.budget // s.batch_size
    log(f"[mitigate] LoRA r={s.lora_rank}: {steps} steps x {s.batch_size} examples on "
        f"{', '.join(selection['under_served'])}")
    history = train_lora(student, data, selection["weights"], steps=steps, batch_size=s.batch_size, lr=s.lr,
                         vocab=vocab, seed=s.seed, log=log)
    kl_after = kl_by_task(student, data, vocab)
    kl = {t: {"before": kl_before[t], "after": kl_after[t], "change": kl_after[t] - kl_before[t],
              "trained_on": t in selection["under_served"]} for t in kl_before}
    return student, history, kl


def _measure(s: MitigationSettings, verifier, drafter, tok, heldout: list[dict], label: str, log):
    log(f"[mitigate] measuring the {label} drafter on {len(heldout)} held-out prompts")
    df = run_study(verifier, drafter, tok, heldout, gamma=s.gamma, max_new_tokens=s.max_new_tokens,
                   decoding="greedy", seed=s.seed, chat_template=s.chat_template, timing_steps=s.timing_steps)
    df.insert(0, "drafter", label)
    return df


def _save_drafter(s: MitigationSettings, student, tok, data_path: Path, selection: dict, out: Path) -> dict:
    info = {"model": "mitigated-drafter", "level": "source",
            "mitigation": {"method": "reprogrid s-CDF (LoRA, KL_k(verifier || drafter); own definition)",
                           "settings": settings_record(s), "under_served": selection["under_served"],
                           "weights": selection["weights"], "distillation_sha256": sha256_file(data_path)},
            "base_drafter": _source_info(s.drafter), "verifier": _source_info(s.verifier),
            "provenance": stamp()}
    return save_mitigated(student, tok, out / "drafter", info, adapter_dir=out / "adapter")


def _well_served(comparison: dict, selection: dict) -> dict:
    """Held-out acceptance change (with interval) of the tasks that were not trained on: the cost side."""
    tasks = comparison["change"].get("alpha_analytic", {}).get("tasks", {})
    return {t: v for t, v in tasks.items() if t not in selection["under_served"]}


def execute(s: MitigationSettings, train: list[dict], heldout: list[dict], log=print) -> dict:
    """Steps 2-6 of the mitigation on the checked settings and split (see the module docstring)."""
    import pandas as pd

    from reprogrid.specdec.pairs import load_pair, shared_vocab

    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    verifier, drafter, tok = load_pair(s.verifier, s.drafter)
    verifier, drafter = _place(verifier, s), _place(drafter, s)
    vocab = shared_vocab(verifier, drafter, len(tok))
    data = _distil(s, verifier, tok, train, vocab, out, log)
    selection = select_tasks(training_alphas(verifier, drafter, data, len(tok)), s.under_served,
                             s.deficit_power, s.deficit_floor)
    log(f"[mitigate] under-served: {', '.join(selection['under_served'])} ({selection['rule']})")
    student, history, kl = _fine_tune(s, drafter, data, selection, vocab, log)
    write_parquet(pd.DataFrame(history), out / "training.parquet")
    record = _save_drafter(s, student, tok, out / "distill.npz", selection, out)
    del student
    new_drafter = _place(load_mitigated(out / "drafter")[0], s)
    before = _measure(s, verifier, drafter, tok, heldout, "original", log)
    after = _measure(s, verifier, new_drafter, tok, heldout, "mitigated", log)
    write_parquet(before, out / "before.parquet")
    write_parquet(after, out / "after.parquet")
    comparison = compare(before, after, n_boot=s.n_boot, seed=s.seed)
    return {"settings": settings_record(s), "definition": "reprogrid's own s-CDF (see reprogrid.specdec.mitigate)",
            "split": {"train": [f"{p['task']}/{p['prompt_id']}" for p in train],
                      "heldout": [f"{p['task']}/{p['prompt_id']}" for p in heldout]},
            "selection": selection, "training_kl": kl, "steps": len(history),
            "drafter_dir": str(out / "drafter"), "drafter_weights_sha256": record["weights_sha256"],
            "comparison": comparison, "well_served": _well_served(comparison, selection),
            "provenance": stamp()}


def run_mitigation(s: MitigationSettings, log=print) -> dict:
    """Check every setting (no model loaded), run the mitigation, write ``mitigation.json``; return its content."""
    t0 = time.perf_counter()
    train, heldout = check_settings(s)
    summary = execute(s, train, heldout, log=log)
    summary["wall_s"] = time.perf_counter() - t0
    summary["peak_memory_mb"] = peak_memory_mb()
    write_json(Path(s.out) / "mitigation.json", summary)
    return summary
