"""The report's mitigation subsection, rendered from a synthetic mitigation.json with known changes.

The before/after tables are the synthetic speculative decoding study of tests/report_fixtures.py; the "after"
table raises the worst task's acceptance by a known amount and lowers its cross-entropy, and the summary is made
by the real comparison (reprogrid.specdec.compare) and task selection (reprogrid.specdec.mitigate).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from report_fixtures import make_results
from reprogrid.cli import main

LIFT = {"ruler_cwe": 0.12, "ruler_vt": 0.05}  # per-task acceptance gain of the mitigated drafter
CE_DROP = {"ruler_cwe": 0.30, "ruler_vt": 0.10}


def _write_mitigation(results, *, identical: bool = True) -> dict:
    from reprogrid.specdec.compare import compare
    from reprogrid.specdec.mitigate import select_tasks

    before = pd.read_parquet(results / "specdec" / "specdec.parquet")
    rng = np.random.default_rng(3)
    after = before.copy()
    for task, lift in LIFT.items():
        rows = after["task"] == task
        n = int(rows.sum())
        after.loc[rows, "alpha_analytic"] += lift + rng.normal(0, 0.01, n)
        after.loc[rows, "cross_entropy"] -= CE_DROP[task] + rng.normal(0, 0.01, n)
        after.loc[rows, "speedup_measured"] *= 1.1
    if not identical:
        after.loc[0, "output_text"] = "something else"
    comparison = compare(before, after, n_boot=200, seed=0)
    alphas = before.groupby("task")["alpha_analytic"].mean().to_dict()
    selection = select_tasks(alphas, 0, 1.0, 0.01)
    summary = {"definition": "reprogrid's own s-CDF (see reprogrid.specdec.mitigate)", "selection": selection,
               "settings": {"lora_rank": 8, "batch_size": 4, "lr": 0.001, "top_k": 20, "gamma": 4,
                            "max_new_tokens": 32},
               "split": {"train": ["a/1", "b/1"], "heldout": [f"{t}/{p}" for t, p in before[["task", "prompt_id"]]
                                                                 .itertuples(index=False)]},
               "training_kl": {t: {"before": 1.0, "after": 0.5 if t in selection["under_served"] else 1.0,
                                   "change": -0.5, "trained_on": t in selection["under_served"]} for t in alphas},
               "steps": 16, "comparison": comparison, "drafter_weights_sha256": "ab" * 32,
               "well_served": {t: v for t, v in comparison["change"]["alpha_analytic"]["tasks"].items()
                               if t not in selection["under_served"]},
               "wall_s": 1834.0, "peak_memory_mb": 9216.0}
    out = results / "specdec" / "mitigation"
    out.mkdir(parents=True, exist_ok=True)
    (out / "mitigation.json").write_text(json.dumps(summary))
    return summary


def _report(cfg_path, results) -> str:
    assert main(["report", "--config", str(cfg_path), "--results", str(results), "--bootstrap", "0"]) == 0
    return (results / "report" / "summary.md").read_text(encoding="utf-8")


def _row(md: str, task: str) -> list[str]:
    section = md.split("### Mitigation", 1)[1]
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| {task} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_shows_before_after_per_task_and_the_fairness_change(tmp_path):
    cfg_path, results = make_results(tmp_path, with_claims=False, failed_cells=0, truncated=0)
    summary = _write_mitigation(results)
    md = _report(cfg_path, results)
    assert "### Mitigation: the drafter fine-tuned toward the verifier, before and after" in md
    change = summary["comparison"]["change"]
    under = summary["selection"]["under_served"]
    assert "ruler_cwe" in under and "niah_single_1" not in under  # the worst task is the one trained on
    for task in ("niah_single_1", "ruler_cwe", "ruler_vt"):
        cells = _row(md, task)
        assert cells[1] == ("yes" if task in under else "no")
        before, after = float(cells[2]), float(cells[3])
        assert before == pytest.approx(change["alpha_analytic"]["tasks"][task]["before"], abs=5e-4)
        got = float(cells[4].split(" ")[0].replace("\u2212", "-"))
        assert after - before == pytest.approx(LIFT.get(task, 0.0), abs=0.02)
        assert got == pytest.approx(LIFT.get(task, 0.0), abs=0.02)
        assert "95% CI" in cells[4] or LIFT.get(task, 0.0) == 0.0
    fair = summary["comparison"]["fairness"]
    assert fair["improvement_pct"] > 0  # the worst task's cross-entropy fell the most: more even
    m = re.search(r"Fairness \(reprogrid's own measure\): improvement \+?([0-9.]+)% \(95% CI ([^)]*)\)", md)
    assert m, md.split("### Mitigation", 1)[1][:2000]
    assert float(m.group(1)) == pytest.approx(fair["improvement_pct"], abs=0.6)
    assert "the paper reports about 12.0%" in md
    assert "coefficient of variation" in md and "identical on all 18 held-out prompts" in md
    assert "peak memory 9.0 GB" in md and "30.6 min" in md
    assert "niah_single_1 " in md.split("Cost on the tasks not trained on", 1)[1].splitlines()[0]
    html = (results / "report" / "index.html").read_text(encoding="utf-8")
    assert "Mitigation: the drafter fine-tuned toward the verifier" in html and "ruler_cwe" in html


def test_report_says_when_verifier_outputs_differ_and_omits_the_subsection_without_a_mitigation(tmp_path):
    cfg_path, results = make_results(tmp_path, with_claims=False, failed_cells=0, truncated=0)
    assert "### Mitigation" not in _report(cfg_path, results)
    _write_mitigation(results, identical=False)
    md = _report(cfg_path, results)
    assert "**different** (niah_single_1/niah_single_1-0)" in md
