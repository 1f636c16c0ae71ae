"""A study config edit reaches the results on the next `snakemake` run, and only the affected jobs run.

The study runs a tiny randomly initialised Qwen2 (real tokenizer, `source: local_dir`) through the whole
workflow, so each run costs seconds; then three edits, each on its own copy of the finished study:
- a new scoring level re-scores without generating;
- a changed generation setting generates only the new generation ids, finished ones are kept;
- a comment or formatting change re-runs nothing.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, make_tiny_qwen2, snakemake

pytestmark = pytest.mark.workflow

BASE = """\
study: edits
seed: 3
models:
  tiny: {{source: local_dir, path: {model}}}
ruler: {{tasks: [niah_single_1], n_items: 2}}
factors:
  model: [tiny]
  context_length: [512]
  chat_template: [false, true]
  max_gen_toks: [{gen_toks}]
  metric: [{metrics}]
attribution: {{bootstrap: 10}}
resources: {{threads: 1}}
"""


def write(path: Path, model: Path, gen_toks: str = "8", metrics: str = "all_match") -> Path:
    path.write_text(BASE.format(model=model, gen_toks=gen_toks, metrics=metrics))
    return path


def jobs_run(res) -> set[str]:
    """The rules Snakemake ran (from its job statistics table)."""
    out = res.stdout + res.stderr
    m = re.search(r"Job stats:\n(.*?)\n\n", out, re.S)
    if not m:
        return set()
    rows = [ln.split() for ln in m.group(1).splitlines()[2:]]
    return {r[0] for r in rows if r and r[0] not in ("all", "total")}


def generation_files(R: Path) -> dict[str, int]:
    return {p.stem: p.stat().st_mtime_ns for p in sorted((R / "generations").glob("*/*.parquet"))}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, qwen_tokenizer_dir):
    root = tmp_path_factory.mktemp("edits")
    model = make_tiny_qwen2(root / "tiny-qwen2", qwen_tokenizer_dir)
    wd = root / "study"
    wd.mkdir()
    cfg = write(wd / "study.yaml", model)
    res = snakemake(wd, "--cores", "2", "--configfile", str(cfg), timeout=1800)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert {"generate", "score", "report"} <= jobs_run(res)
    return wd, model


@pytest.fixture
def study(finished, tmp_path):
    """A copy of the finished study (results and Snakemake's metadata, modification times kept)."""
    wd, model = finished
    copy = tmp_path / "study"
    shutil.copytree(wd, copy, symlinks=True)
    return copy, model


def test_new_scoring_level_rescores_without_generating(study):
    wd, model = study
    R = wd / "results"
    before = generation_files(R)
    cfg = write(wd / "study.yaml", model, metrics="all_match, any_match")
    res = snakemake(wd, "--cores", "2", "--configfile", str(cfg), timeout=1200)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    ran = jobs_run(res)
    assert {"grid", "score", "attribute", "report"} <= ran
    assert "generate" not in ran and "prepare_model" not in ran
    assert generation_files(R) == before
    cells = pd.read_parquet(R / "tables/cells.parquet")
    assert set(cells["metric"]) == {"all_match", "any_match"}
    grid = pd.read_csv(R / "grid/cells.tsv", sep="\t")
    assert len(grid) == 4 and set(grid["metric"]) == {"all_match", "any_match"}
    assert "any_match" in (R / "report/summary.md").read_text()


def test_changed_generation_setting_generates_only_new_ids(study):
    wd, model = study
    R = wd / "results"
    before = generation_files(R)
    cfg = write(wd / "study.yaml", model, gen_toks="8, 4")
    res = snakemake(wd, "--cores", "2", "--configfile", str(cfg), timeout=1200)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert {"grid", "generate", "score"} <= jobs_run(res)
    assert "prepare_model" not in jobs_run(res) and "ruler_data" not in jobs_run(res)
    after = generation_files(R)
    grid = pd.read_csv(R / "grid/cells.tsv", sep="\t")
    assert set(after) == set(grid["generation_id"]) and len(after) == 4
    for gid, stamp in before.items():  # the finished generations were kept, not redone
        assert after[gid] == stamp
    log = next((R / "logs/generate").glob("*.log")).read_text()
    assert log.count("already done, skipped") == 2
    manifest = json.loads(next((R / "generations").glob("*.manifest.json")).read_text())
    assert set(manifest["generations"]) == set(after)
    samples = pd.read_parquet(R / "tables/samples.parquet")
    assert set(samples["max_gen_toks"]) == {4, 8}


def test_comment_or_formatting_change_reruns_nothing(study):
    wd, model = study
    R = wd / "results"
    before = {p: p.stat().st_mtime_ns for p in R.rglob("*") if p.is_file()}
    cfg = wd / "study.yaml"
    text = cfg.read_text()
    reformatted = "# a comment a user added\n" + text.replace("seed: 3", "seed:    3   # the seed").replace(
        "  tiny: {source: local_dir, path: ", "  tiny:\n    source: local_dir\n    path: ").replace("}\nruler", "\nruler")
    assert reformatted != text
    cfg.write_text(reformatted)
    dry = snakemake(wd, "-n", "--cores", "2", "--configfile", str(cfg), timeout=600)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
    res = snakemake(wd, "--cores", "2", "--configfile", str(cfg), timeout=600)
    assert res.returncode == 0 and not jobs_run(res)
    after = {p: p.stat().st_mtime_ns for p in R.rglob("*") if p.is_file()}
    assert after == before
