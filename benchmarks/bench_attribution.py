"""Benchmark of the attribution engine at the size the issue asks for.

1,000,000 per-sample rows, 7 factors (levels 2,2,2,3,3,2,2 -> 288 cells), items nested in tasks
(``task`` is one of the 3-level factors, 1000 items per task, every item crossed with the other six
factors), 0/1 outcomes. Runs ``attribute`` with 200 bootstrap replicates and the default noise floor
(100 permutations per factor), for the gaussian and the binomial family, then the whole CLI
(Parquet in, two files out). Prints wall and CPU times, the load average and peak memory (ru_maxrss).
The gaussian runs include the test-inversion intervals of the population shares (issue #14).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_attribution.py [--rows N] [--bootstrap B]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from reprogrid.attribution import DEFAULT_NOISE_PERMUTATIONS, attribute
from reprogrid.cli import main as cli_main

LEVELS = {"quant": 2, "template": 2, "metric": 2, "task": 3, "length": 3, "split": 2, "sampler": 2}
ITEMS_PER_TASK = 1000


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build(n_rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    names = list(LEVELS)
    n_cells = int(np.prod(list(LEVELS.values())))
    cell = np.arange(n_rows) % n_cells
    codes = np.array(np.unravel_index(cell, tuple(LEVELS.values()))).T  # (n, 7)
    df = pd.DataFrame({f: pd.Categorical.from_codes(codes[:, j], [f"{f}{i}" for i in range(LEVELS[f])])
                       for j, f in enumerate(names)})
    task = codes[:, names.index("task")]
    item = task * ITEMS_PER_TASK + rng.integers(0, ITEMS_PER_TASK, n_rows)
    df["item"] = item
    item_eff = rng.normal(0, 1.0, 3 * ITEMS_PER_TASK)[item]
    eta = (0.8 * (codes[:, 0] - 0.5) + 0.4 * (codes[:, 3] - 1) + 0.3 * codes[:, 4] * codes[:, 0]
           + 0.2 * (codes[:, 1] - 0.5) + item_eff)
    df["correct"] = (rng.random(n_rows) < 1 / (1 + np.exp(-eta))).astype(np.int8)
    return df


def timed(label: str, fn):
    """Wall time, CPU time of this process (user + system: what the step costs on an idle machine when it
    runs single-threaded, as attribute does), the 1-minute load average before and after, peak RSS."""
    load0 = os.getloadavg()[0]
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    dt, dc = time.perf_counter() - t, time.process_time() - c
    print(f"{label:<52s} wall {dt:8.2f} s   cpu {dc:8.2f} s   load {load0:5.2f} -> {os.getloadavg()[0]:5.2f}   "
          f"peak RSS {peak_mb():8.0f} MB", flush=True)
    return out, dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--permutations", type=int, default=DEFAULT_NOISE_PERMUTATIONS)
    ap.add_argument("--no-cli", action="store_true")
    a = ap.parse_args()
    factors = list(LEVELS)
    print(f"python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}, "
          f"cpus {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}")
    print(f"rows {a.rows:,}, factors {len(factors)} (levels {list(LEVELS.values())}), "
          f"bootstrap {a.bootstrap}, noise permutations {a.permutations}/factor")
    df, _ = timed("build synthetic table", lambda: build(a.rows))
    common = dict(item="item", bootstrap=a.bootstrap, seed=1, noise_floor_permutations=a.permutations)
    res, _ = timed("attribute gaussian (bootstrap + noise floor)",
                   lambda: attribute(df, "correct", factors, family="gaussian", **common))
    print(res.table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    b = res.details["bootstrap"]
    print(f"cells {res.details['n_cells']}, items {b['n_units']}, bootstrap strata {b['n_strata']} "
          f"(from {b['strata_from_factors']}), noise-floor permutation: "
          f"{ {f: x['permutation'] for f, x in res.details['noise_floor']['factors'].items()} }")
    timed("attribute gaussian, bootstrap only (no noise floor)",
          lambda: attribute(df, "correct", factors, family="gaussian", item="item", bootstrap=a.bootstrap,
                            seed=1, noise_floor_permutations=0))
    timed("attribute binomial (bootstrap + noise floor)",
          lambda: attribute(df, "correct", factors, family="binomial", **common))
    timed("attribute gaussian, no --item (rows are units)",
          lambda: attribute(df, "correct", factors, family="gaussian", bootstrap=a.bootstrap, seed=1,
                            noise_floor_permutations=a.permutations))
    if not a.no_cli:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "samples.parquet"
            df.to_parquet(path, index=False)
            argv = ["attribute", str(path), "--response", "correct", "--factors", ",".join(factors),
                    "--item", "item", "--bootstrap", str(a.bootstrap), "--seed", "1",
                    "--noise-permutations", str(a.permutations), "--out", str(Path(tmp) / "out")]
            rc, _ = timed("CLI end to end (read Parquet, attribute, write)", lambda: cli_main(argv))
            if rc != 0:
                print(f"CLI failed with exit code {rc}", file=sys.stderr)
                return 1
    print(f"peak RSS of the whole run: {peak_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
