"""Run snakemake workflows through a real (local, single-node) SLURM cluster.

The cluster comes from tests/slurm_cluster.py (LocalSlurm): munged + slurmctld + slurmd under a
temporary directory, installed with scripts/install-slurm.sh if missing. Needs root; where it cannot
be started the tests are skipped with the reason (shown by `pytest -ra`).

Select with `pytest -m slurm`; set REPROGRID_TEST_SLURM_INSTALL=0 to never apt-get install.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_cluster import (  # noqa: E402
    PROFILE_NODE,
    LocalSlurm,
    SlurmUnavailable,
    describe_failure,
    run_snakemake_on_slurm,
)

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory):
    """One LocalSlurm for the module, sized for profiles/slurm (fake GPU GRES, 16 CPUs, 64 GB)."""
    install = os.environ.get("REPROGRID_TEST_SLURM_INSTALL", "1") != "0"
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"), install=install, **PROFILE_NODE)
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        pytest.skip(f"local SLURM unavailable: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


# Three rules plus the target: `generate` and `score` each write one file, `aggregate` joins them.
# `generate` shares its name with the GPU rule of the real workflow, so profiles/slurm's
# set-resources apply to it (--gpus=1 --cpus-per-gpu=8 --mem 32000); the others keep their own
# small resources. Each job records the SLURM variables it sees.
TOY_SNAKEFILE = r'''
rule all:
    input: "out/all.txt"

rule generate:
    output: "out/generate.txt"
    threads: 1
    resources: mem_mb=100, runtime=5
    shell: 'echo "generate job=${{SLURM_JOB_ID:-}} partition=${{SLURM_JOB_PARTITION:-}} gpus=${{CUDA_VISIBLE_DEVICES:-}}" > {output}'

rule score:
    output: "out/score.txt"
    threads: 1
    resources: mem_mb=100, runtime=5
    shell: 'echo "score job=${{SLURM_JOB_ID:-}} partition=${{SLURM_JOB_PARTITION:-}} gpus=${{CUDA_VISIBLE_DEVICES:-}}" > {output}'

rule aggregate:
    input: "out/generate.txt", "out/score.txt"
    output: "out/all.txt"
    threads: 1
    resources: mem_mb=100, runtime=5
    shell: 'cat {input} > {output} && echo "aggregate job=${{SLURM_JOB_ID:-}}" >> {output}'
'''

LINE = re.compile(r"^(?P<rule>\w+) job=(?P<job>\S*)(?: partition=(?P<part>\S*) gpus=(?P<gpus>\S*))?$")


@pytest.mark.timeout(300)
def test_toy_workflow_runs_through_slurm(local_slurm, tmp_path):
    workdir = tmp_path / "wf"
    workdir.mkdir()
    snakefile = workdir / "Snakefile"
    snakefile.write_text(TOY_SNAKEFILE)

    t0 = time.monotonic()
    result = run_snakemake_on_slurm(
        local_slurm, snakefile, workdir, "--verbose",
        extra_env={"REPROGRID_SLURM_PARTITION": local_slurm.partition},
        timeout=240,
    )
    elapsed = time.monotonic() - t0
    print(f"snakemake through SLURM took {elapsed:.1f} s")
    assert result.returncode == 0, describe_failure(local_slurm, result, workdir)

    # Outputs: one line per job, each with a non-empty SLURM job id.
    lines = (workdir / "out" / "all.txt").read_text().splitlines()
    parsed = {m["rule"]: m for m in map(LINE.match, lines) if m}
    assert set(parsed) == {"generate", "score", "aggregate"}, lines
    jobs = {rule: m["job"] for rule, m in parsed.items()}
    assert all(jobs.values()), f"SLURM_JOB_ID not set inside a job: {lines}"
    assert len(set(jobs.values())) == 3, f"jobs did not get distinct SLURM job ids: {jobs}"
    for rule in ("generate", "score"):
        assert (workdir / "out" / f"{rule}.txt").read_text().strip() == lines[0 if rule == "generate" else 1]
        # partition taken from $REPROGRID_SLURM_PARTITION via profiles/slurm default-resources
        assert parsed[rule]["part"] == local_slurm.partition
    # the profile's set-resources gave `generate` a GPU; `score` got none
    assert parsed["generate"]["gpus"] != "", lines
    if "CUDA_VISIBLE_DEVICES" not in os.environ:  # --export=ALL would pass the caller's value on
        assert parsed["score"]["gpus"] == "", lines

    # The executor submitted them with sbatch (partition from the environment, GPU request) ...
    sbatch_calls = [l for l in result.stdout.splitlines() if "sbatch call:" in l]
    assert len(sbatch_calls) == 3, result.stdout[-3000:]
    assert all(f"-p {local_slurm.partition}" in c for c in sbatch_calls), sbatch_calls
    gen_call = next(c for c in sbatch_calls if "rule_generate" in c)
    assert "--gpus=1" in gen_call and "--cpus-per-gpu=8" in gen_call and "--mem 32000" in gen_call, gen_call
    # ... SLURM ran them to completion ...
    states = dict(
        line.split("|") for line in local_slurm.run(
            "squeue", "--states=all", "-h", "-o", "%i|%T").stdout.split()
    )
    for rule, job in jobs.items():
        assert states.get(job) == "COMPLETED", (rule, job, states)
    # ... and left one SLURM log per job (kept by profiles/slurm-local).
    logs = {p.stem: p for p in (workdir / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert set(jobs.values()) <= set(logs), (jobs, sorted(logs))
    assert "rule_generate" in str(logs[jobs["generate"]])


# ---------------------------------------------------------------------------------------------------
# The real workflow on the tiny real grid (tests/configs/tiny.yaml: the embedded Qwen2.5-Coder-0.5B,
# 2 tasks x 2 items at 512 tokens, chat template off/on, 2 metrics = 4 cells, 2 generation ids),
# every job submitted with sbatch through profiles/slurm + profiles/slurm-local. The model entry has
# no `device:`, so `generate` runs on CPU although the fake GPU sets CUDA_VISIBLE_DEVICES in its job.

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"


@pytest.mark.workflow
@pytest.mark.timeout(2700)
def test_tiny_real_grid_through_slurm(local_slurm, tmp_path):
    import pandas as pd

    workdir = tmp_path / "wf"
    workdir.mkdir()
    (workdir / "configs").symlink_to(REPO / "configs")  # as tests/conftest.py's `workdir` fixture
    # jobs inherit the submitting environment (--export=ALL): the venv's `reprogrid` must be on PATH
    venv_bin = str(Path(sys.executable).parent)
    env = {"REPROGRID_SLURM_PARTITION": local_slurm.partition,
           "PATH": venv_bin + os.pathsep + local_slurm.env["PATH"]}

    t0 = time.monotonic()
    result = run_snakemake_on_slurm(
        local_slurm, REPO / "Snakefile", workdir, "--configfile", str(TINY), "--verbose",
        extra_env=env, timeout=2400,
    )
    elapsed = time.monotonic() - t0
    print(f"tiny real grid through SLURM took {elapsed:.0f} s")
    assert result.returncode == 0, describe_failure(local_slurm, result, workdir)

    R = workdir / "results-tiny"
    for rel in ("grid/cells.tsv", "tables/samples.parquet", "tables/cells.parquet",
                "attribution/variance_shares.csv", "report/summary.md", "report/index.html"):
        assert (R / rel).is_file() and (R / rel).stat().st_size > 0, rel
    grid = pd.read_csv(R / "grid" / "cells.tsv", sep="\t")
    assert len(grid) == 4 and grid["generation_id"].nunique() == 2
    # one generation file (records + provenance) per generation id
    gen_files = sorted((R / "generations").glob("*/*.parquet"))
    assert sorted(p.stem for p in gen_files) == sorted(set(grid["generation_id"]))
    assert all(p.with_suffix(".json").is_file() for p in gen_files)
    cells = pd.read_parquet(R / "tables" / "cells.parquet")
    assert len(cells) == 4 and (cells["status"] == "ok").all(), cells[["cell_id", "status", "reason"]]
    samples = pd.read_parquet(R / "tables" / "samples.parquet")
    assert len(samples) == 4 * 2 * 2  # cells x tasks x items

    # every job went through sbatch; generate with the profile's GPU request ...
    sbatch_calls = [line for line in result.stdout.splitlines() if "sbatch call:" in line]
    rules = {m.group(1) for line in sbatch_calls for m in [re.search(r"rule_(\w+)", line)] if m}
    assert {"prepare_model", "ruler_data", "generate", "score", "attribute", "report"} <= rules, sorted(rules)
    gen_call = next(c for c in sbatch_calls if "rule_generate" in c)
    assert "--gpus=1" in gen_call and f"-p {local_slurm.partition}" in gen_call, gen_call
    # ... SLURM ran it to completion and kept its log (profiles/slurm-local) ...
    gen_logs = sorted((workdir / ".snakemake" / "slurm_logs" / "rule_generate").rglob("*.log"))
    assert gen_logs, sorted(str(p) for p in (workdir / ".snakemake" / "slurm_logs").rglob("*"))
    states = dict(line.split("|") for line in local_slurm.run(
        "squeue", "--states=all", "-h", "-o", "%i|%T").stdout.split())
    # (finished jobs stay visible to squeue for MinJobAge = 300 s; snakemake's rc 0 already says it ended well)
    assert states.get(gen_logs[-1].stem, "COMPLETED") == "COMPLETED", (gen_logs[-1], states)
    # ... and the generate job's own log shows both generations run
    pkey = "qwen25-coder-0.5b-instruct--source"
    gen_log = (R / "logs" / "generate" / f"{pkey}.log").read_text()
    assert "[generate] qwen25-coder-0.5b-instruct--source: 2 ok, 0 failed" in gen_log, gen_log[-2000:]
