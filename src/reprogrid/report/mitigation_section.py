"""The mitigation's part of the speculative decoding section: per-task acceptance, speed-up and cross-entropy of
the original and the mitigated drafter on the held-out prompts, the paired changes of the disparity measures with
their intervals, the fairness headline (reprogrid's own measure) next to the paper's ~12%, the verifier-output
check, the tasks that were not trained on, and the cost (wall time, peak memory). Everything is read from
``specdec/mitigation/mitigation.json`` (:mod:`reprogrid.specdec.mitigate_run`); nothing is recomputed here."""

from __future__ import annotations

from typing import Any

from reprogrid.report.fmt import Est, finite, fmt_bytes_mb, fmt_seconds
from reprogrid.report.inputs import Inputs

# (value in the comparison, label, decimals of the before/after figures)
PER_TASK = (("alpha_analytic", "α analytic", 3), ("speedup_measured", "speed-up", 2),
            ("cross_entropy", "H(p,q)", 3))
SUMMARIES = (("cv", "coefficient of variation"), ("max_min_ratio", "max/min ratio"),
             ("variance", "across-task variance"))


def _change(entry: dict | None) -> Est:
    """A change after - before with its interval, signed, decimals from the interval."""
    entry = entry or {}
    ci = entry.get("change_ci") or [None, None]
    return Est(float(entry.get("change", float("nan"))), ci[0], ci[1], signed=True, scale=1.0)


def _fixed(x: Any, d: int) -> str:
    return f"{float(x):.{d}f}".replace("-", "\u2212") if finite(x) else "n/a"


def _task_rows(change: dict, under: list[str]) -> list[dict]:
    tasks = sorted({t for value, _, _ in PER_TASK for t in (change.get(value) or {}).get("tasks", {})})
    rows = []
    for t in tasks:
        row: dict[str, Any] = {"task": t, "trained": t in under}
        for value, _, d in PER_TASK:
            e = ((change.get(value) or {}).get("tasks") or {}).get(t)
            row[value] = ({"before": _fixed(e.get("before"), d), "after": _fixed(e.get("after"), d),
                           "change": _change(e), "n": e.get("n")} if e else None)
        rows.append(row)
    return rows


def _summaries(change: dict) -> list[dict]:
    out = []
    for value, label, d in PER_TASK:
        c = change.get(value)
        if not c or "cv" not in c:
            continue
        for name, what in SUMMARIES:
            e = c[name]
            pci = e.get("relative_change_pct_ci") or [None, None]
            out.append({"value": value, "label": label, "measure": what,
                        "before": _fixed(e["before"], 4), "after": _fixed(e["after"], 4), "change": _change(e),
                        "relative": Est(e.get("relative_change_pct", float("nan")) / 100, pci[0] / 100
                                        if finite(pci[0]) else None, pci[1] / 100 if finite(pci[1]) else None,
                                        unit="%", signed=True)})
    return out


def _fairness(f: dict | None) -> dict | None:
    if not f:
        return None
    ci = f.get("relative_change_pct_ci") or [None, None]
    # improvement = -(relative change): its interval is the negated, reversed one
    lo, hi = (-ci[1] / 100, -ci[0] / 100) if all(finite(x) for x in ci) else (None, None)
    return {"improvement": Est(f["improvement_pct"] / 100, lo, hi, unit="%", signed=True),
            "before": _fixed(f.get("before"), 4), "after": _fixed(f.get("after"), 4),
            "paper": f.get("paper_reported_improvement_pct")}


def mitigation_section(inp: Inputs) -> dict | None:
    """None without a mitigation summary; otherwise what the templates show (module docstring)."""
    m = inp.mitigation
    if m is None:
        return None
    comp = m.get("comparison") or {}
    change = comp.get("change") or {}
    sel = m.get("selection") or {}
    under = list(sel.get("under_served") or [])
    settings = m.get("settings") or {}
    check = comp.get("verifier_outputs") or {}
    kl = m.get("training_kl") or {}
    return {
        "definition": m.get("definition", ""), "schedule": sel.get("schedule", ""), "rule": sel.get("rule", ""),
        "under_served": under,
        "weights": ", ".join(f"{t} {float(w):.2f}" for t, w in (sel.get("weights") or {}).items()),
        "alpha_train": ", ".join(f"{t} {float(a):.3f}" for t, a in sorted((sel.get("alpha_train") or {}).items(),
                                                                          key=lambda kv: kv[1])),
        "steps": m.get("steps"), "batch_size": settings.get("batch_size"), "lora_rank": settings.get("lora_rank"),
        "lr": settings.get("lr"), "top_k": settings.get("top_k"),
        "n_train": len((m.get("split") or {}).get("train", [])),
        "n_heldout": len((m.get("split") or {}).get("heldout", [])),
        "gamma": settings.get("gamma"), "max_new_tokens": settings.get("max_new_tokens"),
        "training_kl": [{"task": t, "before": _fixed(v.get("before"), 3), "after": _fixed(v.get("after"), 3),
                         "trained": bool(v.get("trained_on"))} for t, v in sorted(kl.items())],
        "rows": _task_rows(change, under), "summaries": _summaries(change),
        "fairness": _fairness(comp.get("fairness")), "fairness_definition": comp.get("fairness_definition", ""),
        "verifier_identical": bool(check.get("identical")), "verifier_n": check.get("n_prompts"),
        "verifier_differing": ", ".join(check.get("differing") or []),
        "well_served": [{"task": t, "change": _change(v)} for t, v in sorted((m.get("well_served") or {}).items())],
        "wall": fmt_seconds(m.get("wall_s")),
        "peak_memory": fmt_bytes_mb(float(m["peak_memory_mb"])) if finite(m.get("peak_memory_mb")) else "n/a",
        "drafter_sha256": str(m.get("drafter_weights_sha256") or "")[:12],
        "n_boot": comp.get("n_boot"),
    }
