"""Workflow tests: dry runs of every shipped config, and the tiny real grid on the embedded model
(end to end, then killed mid-generation and resumed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, snakemake

pytestmark = pytest.mark.workflow

SHIPPED = sorted(str(p.relative_to(REPO)) for p in [*REPO.glob("configs/*.yaml"),
                                                     *REPO.glob("configs/studies/*.yaml"),
                                                     *REPO.glob("tests/configs/*.yaml")])


@pytest.mark.parametrize("config", SHIPPED)
def test_dry_run_of_every_shipped_config(workdir, config):
    (workdir / "tests").mkdir()
    (workdir / "tests" / "configs").symlink_to(REPO / "tests" / "configs")
    res = snakemake(workdir, "-n", "--cores", "2", "--configfile", str(REPO / config), timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "generate" in res.stdout and "report" in res.stdout


def test_bad_config_stops_the_workflow_with_one_line(workdir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: t\nmodels: {m: {source: embedded, embedded: qwen2.5-coder-0.5b-instruct-q4_k_m}}\n"
                   "factors: {model: [m], context_length: [512, 512]}\n")
    res = snakemake(workdir, "-n", "--cores", "1", "--configfile", str(bad), timeout=120)
    assert res.returncode != 0
    assert "error: " in res.stderr and "factors.context_length" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (workdir / "results").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny real grid (2 generation configs x 2 metrics, 2 tasks x 2 items, 512 tokens) end to end."""
    wd = tmp_path_factory.mktemp("tiny")
    (wd / "configs").symlink_to(REPO / "configs")
    t0 = time.time()
    res = snakemake(wd, "--cores", "2", "--configfile", str(REPO / "tests/configs/tiny.yaml"))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return wd, wd / "results-tiny", time.time() - t0


def test_tiny_grid_end_to_end(tiny_run):
    wd, R, seconds = tiny_run
    grid = pd.read_csv(R / "grid/cells.tsv", sep="\t")
    assert len(grid) == 4 and grid["generation_id"].nunique() == 2
    # exactly one model run per generation id, each with provenance
    gen_files = sorted((R / "generations").glob("*/*.parquet"))
    assert {p.stem for p in gen_files} == set(grid["generation_id"])
    for p in gen_files:
        prov = json.loads(p.with_suffix(".json").read_text())
        assert prov["model"]["sha256"] == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
        assert prov["model"]["weights_sha256"] and prov["model"]["tokenizer_sha256"]
        assert prov["config_sha256"] and prov["packages"]["lm_eval"] == "0.4.13"
        assert prov["seeds"]["lm_eval_seeds"] == 7
    samples = pd.read_parquet(R / "tables/samples.parquet")
    cells = pd.read_parquet(R / "tables/cells.parquet")
    assert len(samples) == 4 * 2 * 2  # cells x tasks x items
    assert {"cell_id", "chat_template", "metric", "task", "item_id", "score", "prompt_tokens", "truncated",
            "response"} <= set(samples.columns)
    assert not samples["truncated"].any()
    assert (samples["prompt_tokens"] > 200).all()
    assert (cells["status"] == "ok").all() and cells["score"].between(0, 1).all()
    # the scoring factor never re-ran the model: both metrics of a generation share its responses
    for _, g in samples.groupby(["generation_id", "item_id"]):
        assert g["response"].nunique() == 1
    shares = pd.read_csv(R / "attribution/variance_shares.csv")
    assert "residual" in set(shares["effect"])
    assert (R / "report/summary.md").read_text().strip()
    html = (R / "report/index.html").read_text()
    assert "<html" in html.lower()
    print(f"tiny grid wall time: {seconds:.0f} s")


def _close(text: str, value: float) -> bool:
    """A printed number equals `value` at the precision it is printed with."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return abs(float(text) - value) <= 0.5 * 10 ** -decimals + 1e-9


HEADLINE = re.compile(r"\*\*(?P<effect>[\w:]+)\*\* explains the largest share of the spread: (?P<point>[\d.]+)%"
                      r" \(95% CI (?P<lo>[\d.]+)–(?P<hi>[\d.]+)%\) of the total variance")
TOTAL = re.compile(r"All factors together explain\s+(?P<point>[\d.]+)% of the total variance")


def test_report_says_what_the_attribution_table_says(tiny_run):
    """The report's headline names the factor with the largest Shapley share, prints that share and its interval
    as the attribution table has them, and its noise verdict agrees with the table's noise floor."""
    wd, R, _ = tiny_run
    shares = pd.read_csv(R / "attribution/variance_shares.csv")
    factors = shares[~shares["effect"].str.contains(":") & (shares["effect"] != "residual")]
    top = factors.sort_values("shapley", ascending=False, kind="stable").iloc[0]
    summary = (R / "report/summary.md").read_text()
    m = HEADLINE.search(summary)
    assert m, summary[:2000]
    assert m["effect"] == top["effect"]
    assert _close(m["point"], top["shapley"] * 100)
    assert _close(m["lo"], top["ci_low"] * 100) and _close(m["hi"], top["ci_high"] * 100)
    v_all = json.loads((R / "attribution/variance_shares.json").read_text())["v_all"]
    assert _close(TOTAL.search(summary)["point"], v_all * 100)
    verdict = ("clears the noise floor" if top["shapley"] > top["noise_floor"]
               else "indistinguishable from noise")
    headline = summary.split("## Headline", 1)[1].split("\n## ", 1)[0]
    assert verdict in headline
    # the HTML report carries the same headline
    html = re.sub(r"<[^>]+>", "", (R / "report/index.html").read_text())
    assert f"{top['effect']} explains the largest share of the spread: {m['point']}% (95% CI {m['lo']}–{m['hi']}%)" \
        in re.sub(r"\s+", " ", html)


def test_research_questions_answered_from_the_evidence(tiny_run):
    """The tiny run's report answers the three research questions, each from named evidence: the measured grid,
    the pitfalls and the published record; the record before the grid for each claim of the pair; a proxy of the
    same family and the cells that would settle the case."""
    wd, R, _ = tiny_run
    md = (R / "report/summary.md").read_text()
    rq = md.split("### The research questions", 1)[1].split("\n## ", 1)[0]
    q1, rest = rq.split("2. *", 1)
    q2, q3 = rest.split("3. ", 1)
    assert "Measured grid:" in q1 and "Measured pitfalls:" in q1
    assert "Published record: 12 Qwen2.5 RULER numbers" in q1
    assert "not traceable to the cited source" in q1
    pitfalls = json.loads((R / "pitfalls/pitfalls.json").read_text())
    assert pitfalls["answer"] in q1 and pitfalls["rows"][0]["factor"] == "chat_template"
    # the path from the best reference cell to the worst: Shapley contributions that add up to the gap
    path = pitfalls["path"]
    assert pitfalls["path_answer"] in md and path["from"] == pitfalls["best"]["cell_id"]
    if path["complete"] and path["differing"]:
        assert sum(c["contribution"] for c in path["contributions"]) == pytest.approx(path["gap"], abs=1e-9)
    pbs = next(line for line in q2.splitlines() if "pbs_attn_qwen25_7b_instruct_1m_ruler_95p7" in line)
    assert "most likely another report's number misattributed" in pbs and "not found in its cited source" in pbs
    assert pbs.index("not traceable") < pbs.index("possible misattribution") < pbs.index("Grid:")
    assert "Proxy (qwen25-coder-0.5b-instruct: same family (qwen2.5), smaller model" in q3
    assert "model=qwen2.5-7b-instruct-1m" in q3 and "include:" in q3
    assert "the grid cannot answer" not in rq.lower() or "Proxy" in q3


def test_report_zip(tiny_run):
    wd, R, _ = tiny_run
    res = snakemake(wd, "--cores", "1", "--configfile", str(REPO / "tests/configs/tiny.yaml"),
                    "--report", str(wd / "report.zip"), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (wd / "report.zip").stat().st_size > 10_000


def test_kill_during_generation_then_resume_is_byte_identical(tiny_run):
    wd, R, _ = tiny_run
    reference = {name: (R / "tables" / name).read_bytes() for name in ("samples.parquet", "cells.parquet")}
    # keep the prepared model and docs; drop generations and everything after them
    for d in ("generations", "tables", "attribution", "report", "claims"):
        shutil.rmtree(R / d, ignore_errors=True)
    bindir = str(Path(sys.executable).parent)
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(wd),
         "--workflow-profile", str(REPO / "profiles/default"), "--cores", "1",
         "--configfile", str(REPO / "tests/configs/tiny.yaml")],
        cwd=wd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"]})
    deadline = time.time() + 900
    first = None
    log_path = R / "logs/generate"
    while time.time() < deadline:
        done = sorted((R / "generations").glob("*/*.json"))
        first = done[0] if done else None
        logs = "".join(p.read_text() for p in log_path.glob("*.log")) if log_path.is_dir() else ""
        if first is not None and " 2/2 " in logs:  # the second generation has started
            break
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    assert first is not None, "no generation finished before the deadline"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole workflow, mid-way through the second generation
    proc.wait()
    # the kill landed during a generation: the second one had started and had not finished
    finished = sorted((R / "generations").glob("*/*.parquet"))
    assert len(finished) == 1, f"the kill did not land during the second generation: {finished}"
    assert " 2/2 " in "".join(p.read_text() for p in log_path.glob("*.log"))
    stamp = first.with_suffix(".parquet").stat().st_mtime_ns
    # a hard kill leaves Snakemake's lock behind: release it the way Snakemake asks users to
    res = snakemake(wd, "--unlock", "--configfile", str(REPO / "tests/configs/tiny.yaml"), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    res = snakemake(wd, "--cores", "2", "--configfile", str(REPO / "tests/configs/tiny.yaml"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert first.with_suffix(".parquet").stat().st_mtime_ns == stamp, "a finished generation was redone"
    log = next((R / "logs/generate").glob("*.log")).read_text()
    assert "already done, skipped" in log
    for name, data in reference.items():
        assert (R / "tables" / name).read_bytes() == data, f"{name} differs from the uninterrupted run"
