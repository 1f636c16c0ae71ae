"""Fractional designs on synthetic full grids with known answers (issue #16's done-when figures).

Each scenario is a real study config (the embedded model; 6-8 varying generation factors and a scoring
factor) expanded by `reprogrid.grid` twice: as the full grid and with its `design:`. Every cell of the
full grid gets a true mean from main effects and two-way interactions (one of them generation x scoring);
rows are drawn around it (gaussian noise, or 0/1 outcomes under a logit link). Per replicate (new noise,
new design seed):

- ``attribute`` on the full grid (the reference shares and its noise floor) and ``estimate`` on the cells
  of the design (the same measured rows, restricted to the runs the design makes);
- |share(design) - share(full grid)| for every factor (and against the true shares of the generating model);
- ranking: the factors that clear the full grid's noise floor, ordered by share, come out in the same order
  from the design and clear its noise floor, and no other factor does;
- coverage: the predicted-mean intervals of the unrun cells against the true cell means, and the held-out
  check's prediction intervals against the measured held-out cells.

    nice -n 10 .venv/bin/python benchmarks/bench_designs.py [--reps 20] [--scenarios two-level-8,...]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.special import expit

from reprogrid import grid
from reprogrid.attribution import attribute
from reprogrid.attribution.incomplete import estimate
from reprogrid.attribution.subsets import Subsets
from reprogrid.config import load_config

MODEL = {"tiny": {"source": "embedded", "embedded": "qwen2.5-coder-0.5b-instruct-q4_k_m", "family": "qwen2.5-small"}}
TWO_LEVEL = {"chat_template": [False, True], "answer_prefix": ["kept", "dropped"], "dtype": ["float32", "bfloat16"],
             "attn_implementation": ["eager", "sdpa"], "length_budget": ["fit", "truncate"], "batch_size": [1, 2],
             "data_seed": [0, 1], "num_fewshot": [0, 1]}
SCENARIOS = {
    "two-level-8": {
        "factors": TWO_LEVEL, "design": {"type": "fractional", "resolution": "V"}, "family": "gaussian",
        "main": {"chat_template": .6, "answer_prefix": .5, "metric": .4, "dtype": .3, "attn_implementation": .2,
                 "length_budget": .12},
        "inter": {("chat_template", "answer_prefix"): .2, ("dtype", "attn_implementation"): .15,
                  ("chat_template", "metric"): .15},
        "sigma": 1.0, "n": 50},
    "two-level-7": {
        "factors": {k: v for k, v in TWO_LEVEL.items() if k != "num_fewshot"},
        "design": {"type": "fractional", "resolution": "IV"}, "family": "gaussian",
        "main": {"chat_template": .6, "answer_prefix": .5, "metric": .4, "dtype": .3, "attn_implementation": .2},
        "inter": {("chat_template", "metric"): .2, ("dtype", "answer_prefix"): .15},
        "sigma": 1.0, "n": 50},
    "mixed-6": {
        "factors": {"context_length": [1024, 2048, 4096], "max_gen_toks": [0, 64, 128],
                    "dtype": ["float32", "bfloat16"], "attn_implementation": ["eager", "sdpa"],
                    "length_budget": ["fit", "truncate"], "data_seed": [0, 1]},
        "design": {"type": "fractional", "reduction": 4}, "family": "gaussian",
        "main": {"context_length": .7, "max_gen_toks": .45, "metric": .4, "dtype": .3, "attn_implementation": .15},
        "inter": {("context_length", "metric"): .25, ("dtype", "attn_implementation"): .15},
        "sigma": 1.0, "n": 50},
    "binomial-8": {
        "factors": TWO_LEVEL, "design": {"type": "fractional", "resolution": "V"}, "family": "binomial",
        "main": {"chat_template": 1.2, "answer_prefix": .9, "metric": .7, "dtype": .5, "attn_implementation": .3},
        "inter": {("chat_template", "answer_prefix"): .4, ("chat_template", "metric"): .3},
        "sigma": None, "n": 50},
}
SCENARIOS["mixed-6-half"] = {**SCENARIOS["mixed-6"], "design": {"type": "fractional", "reduction": 2}}
SCORING = {"metric": ["all_match", "exact_match"]}


def study(tmp: Path, name: str, sc: dict, design: dict | None, seed: int):
    raw = {"study": "synthetic", "seed": seed, "models": MODEL,
           "ruler": {"tasks": ["niah_single_1", "ruler_fwe"], "n_items": 2},
           "factors": {"model": ["tiny"], **sc["factors"], **SCORING}}
    if design:
        raw["design"] = {**design, "seed": seed}
    path = tmp / f"{name}-{'design' if design else 'full'}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(path)
    return cfg, grid.expand(cfg)


def coded(col: pd.Series, levels: list) -> np.ndarray:
    """Centred level codes in [-1, 1] (two levels: -1, +1)."""
    idx = col.map({lv: i for i, lv in enumerate(levels)}).to_numpy(dtype=float)
    return 2 * idx / (len(levels) - 1) - 1


def true_means(cells: pd.DataFrame, sc: dict, levels: dict) -> np.ndarray:
    x = {f: coded(cells[f], levels[f]) for f in levels}
    eta = sum(a * x[f] for f, a in sc["main"].items()) + sum(a * x[f] * x[g] for (f, g), a in sc["inter"].items())
    return eta if sc["family"] == "gaussian" else expit(eta)


def true_shares(cells: pd.DataFrame, factors: list[str], mu: np.ndarray, sc: dict) -> np.ndarray:
    codes = np.column_stack([pd.factorize(cells[f], sort=True)[0] for f in factors])
    sub = Subsets(codes)
    if sc["family"] == "gaussian":
        m = mu - mu.mean()
        v = sub.v(np.ones(len(m)), m, np.array([np.sum(m * m) + len(m) * sc["sigma"] ** 2]), "gaussian")
    else:  # population deviance R^2 of Bernoulli rows: y log y terms vanish for 0/1 outcomes
        v = sub.v(np.ones(len(mu)) * 1e6, mu * 1e6, np.array([0.0]), "binomial")
    return sub.shapley(v)[0]


def draw_rows(cells: pd.DataFrame, mu: np.ndarray, sc: dict, factors: list[str], rng) -> pd.DataFrame:
    n = sc["n"]
    rep = cells.loc[cells.index.repeat(n), ["cell_id", *factors]].reset_index(drop=True)
    m = np.repeat(mu, n)
    rep["y"] = m + rng.normal(0, sc["sigma"], len(m)) if sc["family"] == "gaussian" else rng.random(len(m)) < m
    rep["y"] = rep["y"].astype(float)
    return rep


def ranking_ok(full_sh, full_nf, est_sh, est_nf, factors) -> tuple[bool, bool]:
    """(the factors that clear the full grid's noise floor come out of the design in the same order,
    the same factors clear the design's noise floor)."""
    clear_full = [f for f in factors if full_sh[f] > full_nf[f]]
    clear_est = [f for f in factors if est_sh[f] > est_nf[f]]
    order_full = sorted(clear_full, key=lambda f: -full_sh[f])
    order_est = sorted(clear_full, key=lambda f: -est_sh[f])
    return order_full == order_est, set(clear_est) == set(clear_full)


def replicate(tmp: Path, name: str, sc: dict, rep: int) -> dict:
    seed = 1000 + rep
    cfg_full, cells_full = study(tmp, name, sc, None, seed)
    cfg_d, cells_d = study(tmp, name, sc, sc["design"], seed)
    factors = [f for f in cfg_full.listed if cells_full[f].nunique() > 1]
    levels = {f: list(cfg_full.factors[f]) for f in factors}
    mu = true_means(cells_full, sc, levels)
    rng = np.random.default_rng(seed)
    rows = draw_rows(cells_full, mu, sc, factors, rng)
    rows_d = rows[rows["cell_id"].isin(set(cells_d["cell_id"]))]
    t0 = time.perf_counter()
    full = attribute(rows, "y", factors, family=sc["family"], bootstrap=0, noise_floor_permutations=50, seed=seed)
    t1 = time.perf_counter()
    est = estimate(rows_d, "y", factors, family=sc["family"], draws=200, noise_draws=100, seed=seed)
    t2 = time.perf_counter()
    ft = full.table.set_index("effect")
    et = est.table.copy()
    et["factor"] = et["effect"].str.split(" = ").str[0]
    et = et.set_index("factor")
    full_sh = {f: ft.loc[f, "shapley"] for f in factors}
    est_sh = {f: et.loc[f, "shapley_adj"] for f in factors}  # bias-corrected (the noise floor is for it)
    truth = dict(zip(factors, true_shares(cells_full, factors, mu, sc)))
    pred = est.predicted[est.predicted["status"] == "predicted"]
    key = pred[factors].astype(str).agg("|".join, axis=1)
    mu_by_key = dict(zip(cells_full[factors].astype(str).agg("|".join, axis=1), mu))
    true_mu = key.map(mu_by_key).to_numpy()
    covered = (pred["ci_low"].to_numpy() <= true_mu) & (true_mu <= pred["ci_high"].to_numpy())
    return {
        "runs": cells_d["generation_id"].nunique(), "full_runs": cells_full["generation_id"].nunique(),
        "diff_full": max(abs(est_sh[f] - full_sh[f]) for f in factors),
        "diff_truth": max(abs(est_sh[f] - truth[f]) for f in factors),
        "diff_full_truth": max(abs(full_sh[f] - truth[f]) for f in factors),
        "ranking": ranking_ok(full_sh, {f: ft.loc[f, "noise_floor"] for f in factors}, est_sh,
                              {f: et.loc[f, "noise_floor"] for f in factors}, factors),
        "unrun_covered": covered.mean(), "unrun_cells": len(pred),
        "holdout_coverage": est.details["holdout"].get("coverage", np.nan),
        "aliased": "; ".join(est.details["aliased"]) or "none",
        "t_full": t1 - t0, "t_est": t2 - t1, "truth": truth, "full": full_sh, "est": est_sh,
    }


def run_scenario(name: str, reps: int) -> dict:
    sc = SCENARIOS[name]
    with tempfile.TemporaryDirectory() as tmp:
        res = [replicate(Path(tmp), name, sc, r) for r in range(reps)]
    df = pd.DataFrame([{k: v for k, v in r.items() if k not in ("truth", "full", "est")} for r in res])
    first = res[0]
    return {
        "scenario": name, "family": sc["family"], "design": sc["design"], "rows per cell": sc["n"],
        "runs": f"{df['runs'].iloc[0]}/{df['full_runs'].iloc[0]} ({df['runs'].iloc[0] / df['full_runs'].iloc[0]:.0%})",
        "reps": reps,
        "max_share_diff_vs_full (mean, max)": (df["diff_full"].mean(), df["diff_full"].max()),
        "reps_all_within_0.03": (df["diff_full"] <= 0.03).mean(),
        "max_share_diff_vs_truth (mean, max)": (df["diff_truth"].mean(), df["diff_truth"].max()),
        "full_grid_vs_truth (mean, max)": (df["diff_full_truth"].mean(), df["diff_full_truth"].max()),
        "same_order_of_factors_above_floor": df["ranking"].str[0].mean(),
        "same_set_above_floor": df["ranking"].str[1].mean(),
        "unrun_coverage (nominal 0.95)": df["unrun_covered"].mean(),
        "unrun_cells": int(df["unrun_cells"].iloc[0]),
        "holdout_coverage (nominal 0.95)": df["holdout_coverage"].mean(),
        "aliased": first["aliased"],
        "seconds per rep (attribute full, estimate)": (df["t_full"].mean(), df["t_est"].mean()),
        "true shares": {f: round(v, 3) for f, v in first["truth"].items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--n", type=int, default=None, help="rows per cell (default: each scenario's)")
    args = ap.parse_args()
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, load {os.getloadavg()}")
    for name in args.scenarios.split(","):
        t = time.perf_counter()
        if args.n:
            SCENARIOS[name]["n"] = args.n
        out = run_scenario(name, args.reps)
        print(f"\n## {name}  ({time.perf_counter() - t:.0f} s)")
        for k, v in out.items():
            if isinstance(v, tuple):
                v = ", ".join(f"{x:.3f}" for x in v)
            elif isinstance(v, float):
                v = f"{v:.3f}"
            print(f"- {k}: {v}")


if __name__ == "__main__":
    main()
