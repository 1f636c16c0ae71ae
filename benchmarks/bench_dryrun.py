"""`snakemake -n` on a 10,000-cell grid: how long does planning take? (target: 60 s or less)

Usage: python benchmarks/bench_dryrun.py [--grid mixed|allgen|both] [--repeat 1] [--profile]

Writes a study config into a temporary directory (the real Snakefile, the embedded model entry, levels
valid under src/reprogrid/schema/config.schema.yaml) and times a fresh `snakemake -n --cores 2`
subprocess on it: config validation, grid expansion, DAG of every rule, nothing run. Grids:

* ``mixed``  10 context lengths x 5 data seeds x 5 batch sizes x 2 chat template x 2 quantizations
  x 2 dtypes (= 2,000 generation ids) x 5 splits (scoring) = 10,000 cells;
* ``allgen`` 10 context lengths x 10 data seeds x 5 batch sizes x 2 chat template x 5 quantizations
  x 2 dtypes = 10,000 cells, every one its own generation id (the worst case for planning).

Prints cells, generation ids, jobs, seconds per run. `--profile` also runs the same dry run under
cProfile in-process (snakemake's API) and prints the top functions by cumulative time.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "seed": 7,
    "paths": {"results": "results-bench"},
    "models": {"qwen25-coder-0.5b-instruct": {"source": "embedded", "embedded": "qwen2.5-coder-0.5b-instruct-q4_k_m",
                                              "family": "qwen2.5-small"}},
    "ruler": {"tasks": ["niah_single_1", "ruler_fwe"], "n_items": 2},
}
LENGTHS = [512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288]

GRIDS = {
    "mixed": {
        "model": ["qwen25-coder-0.5b-instruct"],
        "quantization": ["source", "q8_0"],
        "context_length": LENGTHS,
        "chat_template": [False, True],
        "dtype": ["float32", "bfloat16"],
        "batch_size": [1, 2, 4, 8, 16],
        "data_seed": [0, 1, 2, 3, 4],
        "split": ["all", "niah", "non_niah", "even", "odd"],
    },
    "allgen": {
        "model": ["qwen25-coder-0.5b-instruct"],
        "quantization": ["source", "q8_0", "q4_0", "q5_0", "int8_dynamic"],
        "context_length": LENGTHS,
        "chat_template": [False, True],
        "dtype": ["float32", "bfloat16"],
        "batch_size": [1, 2, 4, 8, 16],
        "data_seed": list(range(10)),
    },
}


def write_config(directory: Path, grid: str) -> Path:
    cfg = {"study": f"bench-dryrun-{grid}", **BASE, "factors": GRIDS[grid]}
    path = directory / f"{grid}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def grid_size(config: Path) -> tuple[int, int]:
    from reprogrid import grid
    from reprogrid.study import load_study

    cfg = load_study(config)
    return len(grid.expand(cfg)), len(grid.generations(cfg))


def dry_run(workdir: Path, config: Path) -> tuple[float, int, str]:
    bindir = str(Path(sys.executable).parent)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--workflow-profile", str(REPO / "profiles" / "default"), "-n", "--cores", "2", "--quiet", "rules",
           "--configfile", str(config)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True,
                         env={**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"]})
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"dry run failed (rc {res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    out = res.stdout + res.stderr
    m = re.search(r"^total\s+(\d+)", out, re.M)
    return seconds, int(m.group(1)) if m else -1, out


def profile(workdir: Path, config: Path, top: int = 25) -> None:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        from snakemake.cli import main as smk_main

        argv = ["-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--workflow-profile",
                str(REPO / "profiles" / "default"), "-n", "--cores", "2", "--quiet", "rules",
                "--configfile", str(config)]
        prof.enable()
        try:
            smk_main(argv)
        except SystemExit:
            pass
        prof.disable()
    finally:
        os.chdir(cwd)
    stats = pstats.Stats(prof)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", choices=[*GRIDS, "both"], default="both")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="also profile one dry run in-process (cProfile)")
    ap.add_argument("--target", type=float, default=60.0)
    args = ap.parse_args()
    names = list(GRIDS) if args.grid == "both" else [args.grid]
    ok = True
    with tempfile.TemporaryDirectory(prefix="reprogrid-dryrun-") as tmp:
        tmp = Path(tmp)
        (tmp / "configs").symlink_to(REPO / "configs")
        for name in names:
            config = write_config(tmp, name)
            cells, gens = grid_size(config)
            times = []
            for _ in range(args.repeat):
                seconds, jobs, _ = dry_run(tmp, config)
                times.append(seconds)
            best = min(times)
            ok &= best <= args.target
            print(f"grid={name}: cells={cells} generation_ids={gens} jobs={jobs} "
                  f"seconds={' '.join(f'{t:.1f}' for t in times)} "
                  f"(target <= {args.target:.0f} s: {'met' if best <= args.target else 'MISSED'})", flush=True)
            if args.profile:
                profile(tmp, config)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
