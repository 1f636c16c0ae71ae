"""Pipeline overhead over raw `lm_eval.simple_evaluate` on the same generation config (target: 5% or less).

Usage: python benchmarks/bench_overhead.py [--workdir /tmp/reprogrid-bench] [--reps 6] [--items 2] [--phases]

One generation config (the embedded Qwen2.5-Coder-0.5B-Instruct, RULER niah_single_1 + ruler_fwe,
`--items` docs each at 512 tokens, no chat template, greedy, float32, batch size 1, 2 threads), run as
(a) the pipeline's generate stage: `reprogrid generate` for a one-generation study config (a fresh
    process: config validation, grid expansion, model load, docs from the cache, lm-eval with its
    per-request sqlite cache, prompt token counts, truncation flags, hashes, Parquet + provenance JSON
    + manifest), exactly the command rule `generate` runs;
(b) raw lm-eval in a fresh process: HFLM(pretrained=<the same prepared dir>, max_length=896) +
    `simple_evaluate(tasks, limit=N, log_samples=True)` on task YAMLs that include lm-eval's own RULER
    configs and read the same docs Parquet, samples written to JSONL.
Both sides start cold as processes (interpreter, imports, weights from the page cache). One untimed
warm-up of each, then `--reps` pairs in alternating order (ab, ba, ...); overhead = the median
over the pairs of a/b - 1 (the machine's speed drifts by 10-30% within minutes; a pair cancels it), the
ratio of the medians of all runs is also given. The responses of (a) and (b) are compared sample by sample. Wall and CPU seconds (getrusage of the
process tree) are both recorded, with the CPU seconds other processes used meanwhile. The model and docs are prepared once with
snakemake under --workdir (shared with bench_vs_naive.py).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vs_naive as bvn  # noqa: E402

RAW = r'''
import json, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[5]))
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
model_dir, include_dir, out, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tasks = sys.argv[6].split(",")
lm = HFLM(pretrained=model_dir, device="cpu", batch_size=1, max_length=int(sys.argv[7]), dtype="float32")
# the cheapest raw set-up: index only the two task YAMLs (a default TaskManager indexes every
# lm-eval task, about 14 s here), so any difference is the pipeline's own cost
tm = TaskManager(include_defaults=False, include_path=include_dir)
t1 = time.perf_counter()
res = simple_evaluate(model=lm, tasks=tasks, task_manager=tm, limit=limit, log_samples=True,
                      apply_chat_template=False, bootstrap_iters=0)
t2 = time.perf_counter()
with open(out, "w") as fh:
    for task in tasks:
        for s in sorted(res["samples"][task], key=lambda s: int(s["doc_id"])):
            fh.write(json.dumps({"task": task, "doc_id": int(s["doc_id"]), "prompt_sha256": s["prompt_hash"],
                                 "response": s["filtered_resps"][0]}) + "\n")
print(json.dumps({"simple_evaluate_seconds": t2 - t1, "setup_seconds": t1 - t0}))
'''


# `--phases`: the pipeline side once more, with wall-clock timers around its stages (stderr).
PHASES = r'''
import sys, time
T0 = time.perf_counter()
T = {}
def wrap(mod, name, label=None):
    f = getattr(mod, name)
    def w(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            T[label or name] = T.get(label or name, 0) + time.perf_counter() - t
    setattr(mod, name, w)
import reprogrid.cli, reprogrid.study, reprogrid.grid, reprogrid.models, reprogrid.generate as g, reprogrid.io
T["import reprogrid"] = time.perf_counter() - T0
t = time.perf_counter(); import torch, lm_eval, lm_eval.models.huggingface; T["import torch+lm_eval"] = time.perf_counter() - t
wrap(reprogrid.study, "load_study"); g_load = None
wrap(reprogrid.grid, "generations")
wrap(reprogrid.models, "load_prepared")
wrap(lm_eval.models.huggingface.HFLM, "__init__", "HFLM.__init__")
wrap(g, "_task_config"); wrap(g, "_load_docs"); wrap(g, "code_version"); wrap(g, "package_versions")
wrap(g, "write_parquet"); wrap(g, "write_json")
wrap(lm_eval, "simple_evaluate")
wrap(g, "run_generation")
t = time.perf_counter()
rc = reprogrid.cli.main(sys.argv[1:])
T["cli.main total"] = time.perf_counter() - t
T["process total (after interpreter start)"] = time.perf_counter() - T0
for k, v in T.items():
    print(f"{v:7.2f}  {k}", file=sys.stderr)
'''


def run_pipeline(workdir: Path, config: Path, out: Path) -> tuple[dict, pd.DataFrame, float]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(Path(sys.executable).parent / "reprogrid"), "generate", "--config", str(config),
           "--prepared-key", bvn.PKEY, "--model-dir", str(bvn.model_dir(workdir)),
           "--docs", str(workdir / "results" / "ruler"), "--out", str(out / bvn.PKEY),
           "--manifest", str(out / f"{bvn.PKEY}.manifest.json"), "--threads", str(bvn.THREADS)]
    res, times = bvn.run_timed(cmd, cwd=workdir, capture_output=True, text=True, env=bvn.ENV)
    if res.returncode != 0 or "0 failed" not in res.stderr:
        sys.exit(f"reprogrid generate failed: {' '.join(cmd)}\n{res.stderr[-4000:]}")
    recs = pd.read_parquet(next((out / bvn.PKEY).glob("*.parquet")))
    prov = json.loads(next((out / bvn.PKEY).glob("*.json")).read_text())
    return times, recs[["task", "doc_id", "prompt_sha256", "response"]], float(prov["seconds"])


def run_raw(workdir: Path, include_dir: Path, out: Path, items: int) -> tuple[dict, pd.DataFrame, dict]:
    out.parent.mkdir(parents=True, exist_ok=True)
    tasks = [bvn.DOCS_TASK_PREFIX + t for t in bvn.TASKS]
    cmd = [sys.executable, "-c", RAW, str(bvn.model_dir(workdir)), str(include_dir), str(out), str(items),
           str(bvn.THREADS), ",".join(tasks), str(bvn.MAX_LENGTH)]
    res, times = bvn.run_timed(cmd, cwd=workdir, capture_output=True, text=True, env=bvn.ENV)
    if res.returncode != 0:
        sys.exit(f"raw simple_evaluate failed:\n{res.stderr[-4000:]}")
    df = pd.read_json(out, lines=True)
    df["task"] = df["task"].str.removeprefix(bvn.DOCS_TASK_PREFIX)
    return times, df, json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/reprogrid-bench")
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--items", type=int, default=bvn.N_ITEMS)
    ap.add_argument("--target", type=float, default=5.0, help="percent")
    ap.add_argument("--json", help="default: <workdir>/bench_overhead.json")
    ap.add_argument("--phases", action="store_true", help="also time the pipeline side's stages once")
    args = ap.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "configs").exists():
        (workdir / "configs").symlink_to(REPO_CONFIGS)
    prep_cfg = bvn.write_config(workdir, "bench_vs_naive", bvn.study("bench-vs-naive", bvn.GRID_FACTORS))
    t_prep = bvn.prepare(workdir, prep_cfg)
    one = bvn.study("bench-overhead", {"chat_template": [False]})
    one["ruler"]["n_items"] = args.items
    config = bvn.write_config(workdir, "bench_overhead", one)
    include_dir = workdir / "naive_tasks"
    bvn.write_docs_tasks(include_dir, workdir)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    code_at_start = bvn.code_state()

    print("warm-up (not timed)", flush=True)
    run_pipeline(workdir, config, workdir / "overhead" / "warm_a")
    run_raw(workdir, include_dir, workdir / "overhead" / "warm_b.jsonl", args.items)
    a_runs, b_runs, a_eval, b_eval = [], [], [], []
    recs_a = recs_b = None
    for i in range(args.reps):
        # alternate the order (ab, ba, ab, ...) so that a drift of the machine's speed cancels out
        if i % 2 == 0:
            ta, recs_a, ea = run_pipeline(workdir, config, workdir / "overhead" / f"a{i}")
            tb, recs_b, info = run_raw(workdir, include_dir, workdir / "overhead" / f"b{i}.jsonl", args.items)
        else:
            tb, recs_b, info = run_raw(workdir, include_dir, workdir / "overhead" / f"b{i}.jsonl", args.items)
            ta, recs_a, ea = run_pipeline(workdir, config, workdir / "overhead" / f"a{i}")
        a_runs.append(ta), b_runs.append(tb), a_eval.append(ea), b_eval.append(info["simple_evaluate_seconds"])
        print(f"rep {i + 1}: pipeline {bvn.fmt_times(ta)} (simple_evaluate {ea:.1f} s) | raw {bvn.fmt_times(tb)} "
              f"(simple_evaluate {info['simple_evaluate_seconds']:.1f} s)", flush=True)
    med = lambda runs, k: statistics.median(r[k] for r in runs)  # noqa: E731
    ma, mb = med(a_runs, "wall"), med(b_runs, "wall")
    ca, cb = med(a_runs, "cpu"), med(b_runs, "cpu")
    overhead, overhead_cpu = 100 * (ma / mb - 1), 100 * (ca / cb - 1)
    # the headline: the median over the back-to-back pairs, which cancels the machine's drift in speed
    # (on a shared VM the speed of both sides moves by 10-30% within minutes)
    paired = [100 * (a["wall"] / b["wall"] - 1) for a, b in zip(a_runs, b_runs)]
    paired_cpu = [100 * (a["cpu"] / b["cpu"] - 1) for a, b in zip(a_runs, b_runs)]
    headline = statistics.median(paired)
    merged = recs_a.merge(recs_b, on=["task", "doc_id"], suffixes=("_a", "_b"))
    same_prompt = int((merged["prompt_sha256_a"] == merged["prompt_sha256_b"]).sum())
    same_resp = int((merged["response_a"] == merged["response_b"]).sum())
    rnd = lambda runs: [{k: round(v, 2) for k, v in r.items()} for r in runs]  # noqa: E731
    result = {
        "started": started, "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "preparation_seconds": round(t_prep, 1), "items_per_task": args.items, "samples": len(merged),
        "pipeline_runs": rnd(a_runs), "raw_runs": rnd(b_runs),
        "pipeline_median_wall": round(ma, 2), "raw_median_wall": round(mb, 2),
        "pipeline_median_cpu": round(ca, 2), "raw_median_cpu": round(cb, 2),
        "overhead_percent_wall": round(overhead, 2), "overhead_seconds_wall": round(ma - mb, 2),
        "overhead_percent_cpu": round(overhead_cpu, 2),
        "overhead_percent_wall_per_pair": [round(x, 1) for x in paired],
        "overhead_percent_wall_median_of_pairs": round(headline, 2),
        "overhead_percent_cpu_per_pair": [round(x, 1) for x in paired_cpu],
        "overhead_percent_cpu_median_of_pairs": round(statistics.median(paired_cpu), 2),
        "pipeline_simple_evaluate_seconds": a_eval, "raw_simple_evaluate_seconds": [round(x, 2) for x in b_eval],
        "same_prompt": same_prompt, "same_response": same_resp,
        "target_met": headline <= args.target, "code": code_at_start,
    }
    if bvn.code_state().split(" ", 1)[1] != code_at_start.split(" ", 1)[1]:
        result["code_changed_during_run"] = bvn.code_state()
        print(f"WARNING: the workflow code changed during the run ({code_at_start} -> {bvn.code_state()})",
              flush=True)
    if args.phases:
        out_dir = workdir / "overhead" / "phases"
        shutil.rmtree(out_dir, ignore_errors=True)
        cmd = [sys.executable, "-c", PHASES, "generate", "--config", str(config), "--prepared-key", bvn.PKEY,
               "--model-dir", str(bvn.model_dir(workdir)), "--docs", str(workdir / "results" / "ruler"),
               "--out", str(out_dir / bvn.PKEY), "--manifest", str(out_dir / "m.json"), "--threads", str(bvn.THREADS)]
        res = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=bvn.ENV)
        phases = [line for line in res.stderr.splitlines() if re.match(r"^\s*\d+\.\d\d  \S", line)]
        result["pipeline_phases"] = phases
        print("pipeline phases (s):\n" + "\n".join(phases))
    out = Path(args.json) if args.json else workdir / "bench_overhead.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"overhead (median of {len(paired)} back-to-back pairs) {headline:+.1f}% wall, "
          f"{statistics.median(paired_cpu):+.1f}% CPU; pairs {min(paired):+.1f}..{max(paired):+.1f}% wall; medians of "
          f"all runs {overhead:+.1f}% wall ({ma - mb:+.1f} s on {mb:.1f} s), {overhead_cpu:+.1f}% CPU; "
          f"target <= {args.target:.0f}%: {'met' if headline <= args.target else 'MISSED'}; responses identical "
          f"{same_resp}/{len(merged)}, prompts identical {same_prompt}/{len(merged)}")


REPO_CONFIGS = bvn.REPO / "configs"

if __name__ == "__main__":
    main()
