"""An adaptive design end to end on the embedded model (tiny grid): screening, two follow-up rounds, budget."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import run_cli, snakemake, write_config

pytestmark = pytest.mark.workflow

ADAPTIVE = """study: tiny-adaptive
seed: 7
paths:
  results: results-adaptive
models:
  qwen25-coder-0.5b-instruct:
    source: embedded
    embedded: qwen2.5-coder-0.5b-instruct-q4_k_m
    family: qwen2.5-small
ruler:
  tasks: [niah_single_1]
  n_items: 2
factors:
  model: [qwen25-coder-0.5b-instruct]
  context_length: [512]
  chat_template: [false, true]
  answer_prefix: [kept, dropped]
  max_gen_toks: [0, 8]
  metric: [all_match, any_match]
design: {type: adaptive, resolution: III, budget: 6, follow_up: 1}
attribution:
  bootstrap: 20
resources:
  threads: 2
"""


def test_adaptive_study_runs_two_rounds_and_stops_at_its_budget(workdir):
    cfg = write_config(workdir / "adaptive.yaml", ADAPTIVE)
    R = workdir / "results-adaptive"
    seen, said = [], []
    for _ in range(3):
        res = snakemake(workdir, "--cores", "2", "--configfile", str(cfg))
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        seen.append(set(pd.read_parquet(R / "tables" / "samples.parquet")["generation_id"]))
        assert (R / "attribution" / "design" / "predicted_cells.csv").is_file()
        out = run_cli("adapt", "--config", str(cfg), cwd=workdir)
        assert out.returncode == 0, out.stderr
        said.append(out.stdout)
    assert [len(s) for s in seen] == [4, 5, 6] and seen[0] < seen[1] < seen[2]
    assert said[0].startswith("round 1: added 1") and said[1].startswith("round 2: added 1")
    assert said[2].startswith("budget reached: 6 of 6 generation runs after 2 follow-up round(s)")
    rounds = json.loads((R / "grid" / "rounds.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and [r["runs_after"] for r in rounds] == [5, 6]
    assert set(rounds[0]["generation_ids"]) == seen[1] - seen[0]
    # the finished runs of earlier rounds were kept, not made again
    log = (R / "logs" / "generate").glob("*.log")
    assert any("already done, skipped" in p.read_text() for p in log)
    res = snakemake(workdir, "-n", "--cores", "2", "--configfile", str(cfg))
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr
