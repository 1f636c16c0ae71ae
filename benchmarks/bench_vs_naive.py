"""The pipeline vs the naive way (one `lm_eval` CLI process per cell), same small grid, measured side by side.

Usage: python benchmarks/bench_vs_naive.py [--workdir /tmp/reprogrid-bench] [--variants cli,cli_docs]
       [--fresh] [--no-pipeline-after] [--json out.json]

The grid: the embedded Qwen2.5-Coder-0.5B-Instruct, RULER niah_single_1 + ruler_fwe, 2 items each at
512 tokens; chat template off/on (2 generation configs) x metric all_match/any_match x split all/niah
= 8 cells.

Steps (all in one run, on the same machine, one after the other):
1. preparation, NOT timed, shared by both sides: `snakemake` builds the prepared model directory
   (GGUF joined, verified, converted to transformers) and the RULER docs of the grid.
2. pipeline, timed: `snakemake --cores 2 <results>/tables/cells.parquet` from scratch (grid + one
   generate job running both generation configs + score) = what the naive runs produce; then, timed
   apart, the rest of the default target (attribution + report), which the naive way does not make.
3. naive, timed: for each of the 8 cells one `lm_eval run --model hf ...` process (the model is
   loaded and run again for every cell, as users do it today), then the cell's metric and split are
   computed from that run's `--log_samples` file. Variants:
   * ``cli``: the plain CLI (`--tasks niah_single_1,ruler_fwe --limit 2 --metadata max_seq_lengths`),
     lm-eval builds the RULER docs itself at task load (seeds: random 0, numpy 1234, tasks in one
     process in order) -- what users run today;
   * ``cli_docs``: the same CLI with `--include_path` task YAMLs that include lm-eval's own RULER task
     YAMLs but read the pipeline's docs Parquet, so both sides see the same documents.
4. pipeline again, timed, after the naive runs (skip with --no-pipeline-after): brackets the naive
   runs in time, and its samples.parquet must equal the first run's.
5. comparison per sample: prompt hash (sha256 of the context lm-eval sends the model) and response
   of every naive (cell, task, doc) against the pipeline's generation records and samples.parquet;
   and each cell's score against the pipeline's cells.parquet.

Every timed command records wall seconds, CPU seconds (its own and its descendants', getrusage) and
the CPU seconds other processes used meanwhile (from /proc/stat): on a shared machine the wall-time
ratio is only trustworthy when that foreign load is near 0; the CPU-time ratio is the robust one.

Model settings on both sides: float32 on CPU, batch size 1, greedy, each task's own max_gen_toks,
max_length 896 (= the pipeline's `length_budget: fit` for 512 tokens: 512 + 128 + 256), 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
MODEL = "qwen25-coder-0.5b-instruct"
PKEY = f"{MODEL}--source"
TASKS = ["niah_single_1", "ruler_fwe"]
LENGTH = 512
N_ITEMS = 2
MAX_LENGTH = LENGTH + 128 + 256  # reprogrid.generate: L*(k+1) + max gen budget + CHAT_MARGIN*(k+1)
THREADS = 2
DOCS_TASK_PREFIX = "rgdocs_"

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false",
       "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}


def _busy_seconds() -> float:
    """CPU seconds spent by the whole machine so far (all cores, /proc/stat), to detect other load."""
    with open("/proc/stat") as fh:
        vals = [int(x) for x in fh.readline().split()[1:9]]
    return (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")


def run_timed(cmd: list[str], **kw) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a command; wall seconds, CPU seconds of it and its descendants, and CPU seconds that other
    processes on the machine used meanwhile (`foreign_cpu`: 0 on a quiet machine)."""
    r0, b0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), _busy_seconds(), time.perf_counter()
    res = subprocess.run(cmd, **kw)
    wall = time.perf_counter() - t0
    r1, busy = resource.getrusage(resource.RUSAGE_CHILDREN), _busy_seconds() - b0
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return res, {"wall": wall, "cpu": cpu, "foreign_cpu": max(0.0, busy - cpu)}


def add_times(*ts: dict) -> dict:
    return {k: sum(t[k] for t in ts) for k in ("wall", "cpu", "foreign_cpu")}


def fmt_times(t: dict) -> str:
    return (f"{t['wall']:.1f} s wall, {t['cpu']:.1f} s CPU, other processes {t['foreign_cpu']:.1f} CPU-s "
            f"({t['foreign_cpu'] / max(t['wall'], 1e-9):.2f} cores)")


def code_state() -> str:
    """Git tree hashes of the workflow code (src/, rules/, Snakefile, profiles/) plus a hash of their
    uncommitted diff: if it differs between the start and the end of a run, the code changed mid-run."""
    import hashlib

    paths = ["src", "rules", "Snakefile", "profiles"]
    trees = subprocess.run(["git", "-C", str(REPO), "rev-parse", *[f"HEAD:{p}" for p in paths]],
                           capture_output=True, text=True).stdout.split()
    diff = subprocess.run(["git", "-C", str(REPO), "diff", "HEAD", "--", *paths], capture_output=True, text=True).stdout
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    state = hashlib.sha256(("".join(trees) + diff).encode()).hexdigest()[:12]
    return f"{head} (workflow code {state}{', uncommitted changes' if diff else ''})"


def study(name: str, factors: dict, seed: int = 0) -> dict:
    return {
        "study": name,
        "seed": seed,
        "paths": {"results": "results"},
        "models": {MODEL: {"source": "embedded", "embedded": "qwen2.5-coder-0.5b-instruct-q4_k_m",
                           "family": "qwen2.5-small"}},
        "ruler": {"tasks": TASKS, "n_items": N_ITEMS},
        "factors": {"model": [MODEL], "context_length": [LENGTH], **factors},
        "attribution": {"bootstrap": 20},
        "resources": {"threads": THREADS},
    }


GRID_FACTORS = {"chat_template": [False, True], "metric": ["all_match", "any_match"], "split": ["all", "niah"]}


def write_config(workdir: Path, name: str, cfg: dict) -> Path:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake(workdir: Path, config: Path, *targets: str, cores: int = THREADS) -> dict:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--workflow-profile", str(REPO / "profiles" / "default"),
           "--configfile", str(config), "--cores", str(cores), *targets]  # --configfile takes several values
    res, times = run_timed(cmd, cwd=workdir, capture_output=True, text=True, env=ENV)
    if res.returncode != 0:
        sys.exit(f"snakemake failed (rc {res.returncode}): {' '.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-4000:]}")
    return times


def model_dir(workdir: Path) -> Path:
    return workdir / "results" / "models" / PKEY


def docs_file(workdir: Path, task: str) -> Path:
    return workdir / "results" / "ruler" / task / f"L{LENGTH}" / MODEL / "seed0.parquet"


def prepare(workdir: Path, config: Path) -> float:
    """Prepared model + RULER docs of the grid (not timed against anything; returns its wall seconds)."""
    targets = [str(model_dir(workdir).relative_to(workdir))] + [
        str(docs_file(workdir, t).relative_to(workdir)) for t in TASKS]
    # always through snakemake: it redoes what a change of code or config made stale (a check by file
    # existence would leave that work to the timed pipeline run)
    return snakemake(workdir, config, *targets)["wall"]


def reset_pipeline_outputs(workdir: Path) -> None:
    """Everything after model preparation and docs goes, so the pipeline runs those stages from scratch."""
    R = workdir / "results"
    for d in ("grid", "generations", "tables", "attribution", "report", "claims", "benchmarks/generate"):
        shutil.rmtree(R / d, ignore_errors=True)
    for f in ("benchmarks/attribute.tsv", "benchmarks/report.tsv"):
        (R / f).unlink(missing_ok=True)
    shutil.rmtree(workdir / ".snakemake" / "incomplete", ignore_errors=True)


def write_docs_tasks(include_dir: Path, workdir: Path) -> list[str]:
    """lm-eval task YAMLs: lm-eval's own RULER task config, dataset = the pipeline's docs Parquet."""
    import lm_eval.tasks

    ruler_dir = Path(lm_eval.tasks.__file__).parent / "ruler"
    yaml_of = {"niah_single_1": "niah_single_1.yaml", "ruler_fwe": "fwe.yaml"}
    include_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for task in TASKS:
        name = DOCS_TASK_PREFIX + task
        (include_dir / f"{name}.yaml").write_text(yaml.safe_dump({
            "include": str(ruler_dir / yaml_of[task]),
            "task": name,
            "tag": [],
            "custom_dataset": None,
            "dataset_path": "parquet",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {"test": str(docs_file(workdir, task))}},
        }, sort_keys=False))
        names.append(name)
    return names


# ------------------------------------------------------------------------------------------------ naive


def lm_eval_command(out_dir: Path, chat: bool, tasks: list[str], include_dir: Path | None) -> list[str]:
    cmd = [str(Path(sys.executable).parent / "lm_eval"), "run", "--model", "hf",
           "--model_args", f"pretrained={model_dir_global},max_length={MAX_LENGTH},dtype=float32",
           "--tasks", ",".join(tasks), "--limit", str(N_ITEMS),
           "--metadata", json.dumps({"max_seq_lengths": [LENGTH]}),
           "--device", "cpu", "--batch_size", "1", "--log_samples", "--output_path", str(out_dir)]
    if chat:
        cmd.append("--apply_chat_template")
    if include_dir is not None:
        cmd += ["--include_path", str(include_dir)]
    return cmd


model_dir_global: Path | None = None


def read_cli_samples(out_dir: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(out_dir.rglob("samples_*.jsonl")):
        for line in path.read_text().splitlines():
            s = json.loads(line)
            task = path.name[len("samples_"):].rsplit("_", 1)[0]
            task = task[len(DOCS_TASK_PREFIX):] if task.startswith(DOCS_TASK_PREFIX) else task
            rows.append({"task": task, "doc_id": int(s["doc_id"]), "prompt_sha256": s["prompt_hash"],
                         "response": s["filtered_resps"][0] if s["filtered_resps"] else "",
                         "target": [str(x) for x in s["doc"]["outputs"]]})
    return pd.DataFrame(rows)


def _pred(response: str) -> str:
    from lm_eval.tasks.ruler.common_utils import postprocess_pred

    return postprocess_pred([response])[0]


def naive_metric(metric: str, response: str, refs: list[str]) -> float:
    """What a user writes: lm-eval's string_match_all, and upstream's any-reference credit."""
    from lm_eval.tasks.ruler.common_utils import string_match_all

    if metric == "all_match":
        return string_match_all([_pred(response)], [refs])
    return float(any(r.lower() in _pred(response).lower() for r in refs))


def naive_cell_score(samples: pd.DataFrame, metric: str, split: str) -> tuple[float, pd.DataFrame]:
    df = samples if split == "all" else samples[samples["task"].str.startswith("niah_")]
    df = df.assign(score=[naive_metric(metric, r, t) for r, t in zip(df["response"], df["target"])])
    return float(df.groupby("task")["score"].mean().mean()), df  # task_mean, the pipeline's default


def run_naive(workdir: Path, variant: str, cells: list[dict], include_dir: Path | None) -> dict:
    tasks = [DOCS_TASK_PREFIX + t for t in TASKS] if variant == "cli_docs" else TASKS
    base = workdir / "naive" / variant
    shutil.rmtree(base, ignore_errors=True)
    per_cell, times = [], []
    for i, cell in enumerate(cells):
        out = base / f"cell{i}"
        cmd = lm_eval_command(out, cell["chat_template"], tasks, include_dir)
        res, tm = run_timed(cmd, cwd=workdir, capture_output=True, text=True, env=ENV)
        if res.returncode != 0:
            sys.exit(f"lm_eval failed (rc {res.returncode}): {' '.join(cmd)}\n{res.stderr[-4000:]}")
        t0 = time.perf_counter()  # the naive user's own scoring of the cell (metric, split)
        samples = read_cli_samples(out)
        score, scored = naive_cell_score(samples, cell["metric"], cell["split"])
        tm["wall"] += time.perf_counter() - t0
        (out / "lm_eval.log").write_text(res.stdout + res.stderr)
        times.append(tm)
        per_cell.append({**cell, **{k: round(v, 1) for k, v in tm.items()}, "score": score,
                         "samples": scored.to_dict("records")})
        print(f"  naive {variant} cell {i + 1}/{len(cells)} {cell}: {fmt_times(tm)}, score {score:.3f}", flush=True)
    return {"times": add_times(*times), "cells": per_cell, "command": " ".join(
        lm_eval_command(base / "cellN", True, tasks, include_dir))}


# ------------------------------------------------------------------------------------------------ compare


def pipeline_tables(workdir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    R = workdir / "results"
    cells = pd.read_parquet(R / "tables" / "cells.parquet")
    samples = pd.read_parquet(R / "tables" / "samples.parquet")
    records = pd.concat([pd.read_parquet(p) for p in sorted((R / "generations" / PKEY).glob("*.parquet"))],
                        ignore_index=True)
    return cells, samples, records


def compare(naive: dict, cells: pd.DataFrame, samples: pd.DataFrame, records: pd.DataFrame) -> dict:
    prompts = {(r.generation_id, r.task, int(r.doc_id)): r.prompt_sha256 for r in records.itertuples()}
    n = same_prompt = same_response = same_response_given_prompt = 0
    score_diffs, mismatches = [], []
    for c in naive["cells"]:
        row = cells[(cells["chat_template"] == c["chat_template"]) & (cells["metric"] == c["metric"])
                    & (cells["split"] == c["split"])]
        assert len(row) == 1, (c, len(row))
        row = row.iloc[0]
        score_diffs.append(abs(row["score"] - c["score"]))
        cs = samples[samples["cell_id"] == row["cell_id"]]
        pipe = {(s.task, int(s.doc_id)): s.response for s in cs.itertuples()}
        for s in c["samples"]:
            key = (s["task"], int(s["doc_id"]))
            n += 1
            p_ok = prompts.get((row["generation_id"], *key)) == s["prompt_sha256"]
            r_ok = pipe.get(key) == s["response"]
            same_prompt += p_ok
            same_response += r_ok
            same_response_given_prompt += p_ok and r_ok
            if not r_ok and len(mismatches) < 6:
                mismatches.append({"cell": {k: c[k] for k in ("chat_template", "metric", "split")}, "item": key,
                                   "same_prompt": p_ok, "naive": s["response"][:120], "pipeline": (pipe.get(key) or "")[:120]})
    return {"samples_compared": n, "same_prompt": same_prompt, "same_response": same_response,
            "same_response_where_prompt_same": same_response_given_prompt,
            "max_abs_cell_score_diff": max(score_diffs) if score_diffs else None, "mismatch_examples": mismatches}


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    global model_dir_global
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/reprogrid-bench")
    ap.add_argument("--variants", default="cli,cli_docs", help="naive variants to run: cli, cli_docs")
    ap.add_argument("--fresh", action="store_true", help="wipe the workdir first (model preparation again)")
    ap.add_argument("--json", help="write the full result here (default: <workdir>/bench_vs_naive.json)")
    ap.add_argument("--no-pipeline-after", dest="pipeline_after", action="store_false",
                    help="skip the second pipeline run after the naive runs (it brackets the naive runs in time)")
    args = ap.parse_args()
    workdir = Path(args.workdir).resolve()
    if args.fresh:
        shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "configs").exists():
        (workdir / "configs").symlink_to(REPO / "configs")
    model_dir_global = model_dir(workdir)
    config = write_config(workdir, "bench_vs_naive", study("bench-vs-naive", GRID_FACTORS))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    code_at_start = code_state()

    t_prep = prepare(workdir, config)
    print(f"preparation (not timed against anything): {t_prep:.1f} s", flush=True)

    def run_pipeline(label: str) -> dict:
        reset_pipeline_outputs(workdir)
        tables = snakemake(workdir, config, "results/tables/cells.parquet")
        rest = snakemake(workdir, config)
        gen_s = float(pd.read_csv(workdir / "results" / "benchmarks" / "generate" / f"{PKEY}.tsv", sep="\t")["s"].iloc[0])
        print(f"pipeline ({label}): grid+generate+score {fmt_times(tables)} (generate job {gen_s:.1f} s); "
              f"attribution+report {fmt_times(rest)}", flush=True)
        c, s, r = pipeline_tables(workdir)
        if not (c["status"] == "ok").all():
            sys.exit(f"pipeline cells failed:\n{c[['cell_id', 'status', 'reason']]}")
        return {"tables": {k: round(v, 1) for k, v in tables.items()},
                "attribution_report": {k: round(v, 1) for k, v in rest.items()}, "generate_job_seconds": gen_s,
                "_frames": (c, s, r)}

    pipeline_runs = [run_pipeline("before the naive runs")]
    cells, samples, records = pipeline_runs[0]["_frames"]

    grid_cells = [{"chat_template": c, "metric": m, "split": s} for c in GRID_FACTORS["chat_template"]
                  for m in GRID_FACTORS["metric"] for s in GRID_FACTORS["split"]]
    include_dir = workdir / "naive_tasks"
    write_docs_tasks(include_dir, workdir)
    naive_runs = {}
    for variant in [v for v in args.variants.split(",") if v]:
        naive = run_naive(workdir, variant, grid_cells, include_dir if variant == "cli_docs" else None)
        naive_runs[variant] = (naive, compare(naive, cells, samples, records))
        print(f"naive {variant}: {fmt_times(naive['times'])}", flush=True)
    if args.pipeline_after:
        pipeline_runs.append(run_pipeline("after the naive runs"))
        # the second pipeline run must reproduce the first one's samples exactly
        _, s2, _ = pipeline_runs[-1]["_frames"]
        same = samples.reset_index(drop=True).equals(s2.reset_index(drop=True))
        print(f"pipeline samples.parquet identical across the two runs: {same}", flush=True)
    for run in pipeline_runs:
        run.pop("_frames")

    pipe_wall = statistics.mean(r["tables"]["wall"] for r in pipeline_runs)
    pipe_cpu = statistics.mean(r["tables"]["cpu"] for r in pipeline_runs)
    pipe_all_wall = statistics.mean(r["tables"]["wall"] + r["attribution_report"]["wall"] for r in pipeline_runs)
    result = {"started": started, "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": {"cores": os.cpu_count(), "gpu": False},
              "grid": {"cells": len(grid_cells), "generation_configs": 2, "tasks": TASKS, "n_items": N_ITEMS,
                       "context_length": LENGTH},
              "preparation_seconds": round(t_prep, 1),
              "pipeline": {"runs": pipeline_runs, "mean_tables_wall": round(pipe_wall, 1),
                           "mean_tables_cpu": round(pipe_cpu, 1),
                           "command": f"snakemake --cores {THREADS} --configfile {config.name} results/tables/cells.parquet"},
              "naive": {}}
    for variant, (naive, cmp) in naive_runs.items():
        nt = naive["times"]
        result["naive"][variant] = {
            "times": {k: round(v, 1) for k, v in nt.items()},
            "median_cell_wall": round(statistics.median(c["wall"] for c in naive["cells"]), 1),
            "speedup_wall": round(nt["wall"] / pipe_wall, 2),
            "speedup_cpu": round(nt["cpu"] / pipe_cpu, 2),
            "speedup_wall_vs_pipeline_incl_attribution_report": round(nt["wall"] / pipe_all_wall, 2),
            "comparison": cmp, "command": naive["command"],
            "cells": [{k: v for k, v in c.items() if k != "samples"} for c in naive["cells"]],
        }
        print(f"naive {variant} vs pipeline: speedup {nt['wall'] / pipe_wall:.2f}x wall, {nt['cpu'] / pipe_cpu:.2f}x CPU "
              f"({nt['wall'] / pipe_all_wall:.2f}x wall vs the pipeline incl. attribution+report); prompts identical "
              f"{cmp['same_prompt']}/{cmp['samples_compared']}, responses identical "
              f"{cmp['same_response']}/{cmp['samples_compared']} (where the prompt is identical: "
              f"{cmp['same_response_where_prompt_same']}/{cmp['same_prompt']}), max |cell score diff| "
              f"{cmp['max_abs_cell_score_diff']}", flush=True)
    result["code"] = code_at_start
    if code_state().split(" ", 1)[1] != code_at_start.split(" ", 1)[1]:
        result["code_changed_during_run"] = code_state()
        print(f"WARNING: the workflow code changed during the run ({code_at_start} -> {code_state()}); "
              "see git diff between the two commits", flush=True)
    out = Path(args.json) if args.json else workdir / "bench_vs_naive.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"full result: {out}")


if __name__ == "__main__":
    main()
