"""Coverage of the attribution intervals in simulation, on crossed designs like a RULER grid.

Design: three protocol factors A (2 levels), B (2), C (4) -> 16 cells; the same items in every cell (an item
random effect shared by all cells), per-sample noise. ``unbalanced``: two cells missing and 10% of the
(cell, item) scores missing at random. ``gaussian``: y = mu_cell + u_item + e; ``binary``: y ~ Bernoulli(
expit(mu_cell + u_item)) (0/1 scores, analysed with the gaussian family as the workflow does).
A null factor D (2 levels, no effect) is added for the noise floor's false-positive rate.

Population value of a share: the Shapley value of v(S) computed from the population cell means and the
population within-cell variance (infinitely many items from the same generator, the study's cells and
cell weights). Each setting: R data sets, B bootstrap replicates each; reports, per factor, the population
share, the mean of ``shapley`` and ``shapley_adj``, and the coverage of the 95% intervals
(``ci_low/ci_high`` and ``adj_ci_low/adj_ci_high``).

``adj_ci`` is the interval the JSON calls ``calibrated`` (for the gaussian family the test-inversion
bootstrap interval of ``reprogrid.attribution.inversion``); the table also gives on which side it missed.

Noise floor: the false-positive rate of the null factor D (share > floor), with its 95% Clopper-Pearson
interval per setting and pooled; only D's permutations are run (``noise_floor(..., only=[D])``, the same
code and random stream as ``attribute``).

    nice -n 19 python benchmarks/bench_coverage.py [--datasets R] [--bootstrap B] [--items 20,60,200]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import pandas as pd

from reprogrid.attribution import attribute
from reprogrid.attribution.noise import noise_floor
from reprogrid.attribution.prepare import prepare
from reprogrid.attribution.subsets import Subsets

LEVELS = (2, 2, 4)
FACTORS = ["A", "B", "C"]
SD_ITEM = {"gaussian": 1.0, "binary": 1.2}
SD_NOISE = 1.0


def cell_means(kind: str) -> np.ndarray:
    """Linear predictor of every cell of the full 2 x 2 x 4 grid (A strong, C moderate, B small, A:C)."""
    a, b, c = np.meshgrid(*[np.arange(L) for L in LEVELS], indexing="ij")
    eta = 0.6 * (a - 0.5) + 0.15 * (b - 0.5) + 0.25 * (c - 1.5) / 1.1 + 0.2 * (a - 0.5) * (c - 1.5)
    return (eta if kind == "gaussian" else eta * 1.3).reshape(-1)


def population(kind: str, present: np.ndarray) -> np.ndarray:
    """Population Shapley shares of A, B, C (and residual) over the present cells, equal weights."""
    codes = np.array(list(itertools.product(*[range(L) for L in LEVELS])))[present]
    eta = cell_means(kind)[present]
    M = 1e6
    if kind == "gaussian":
        mu, within = eta, SD_ITEM[kind] ** 2 + SD_NOISE ** 2
        ey2 = mu ** 2 + within
    else:
        x, w = np.polynomial.hermite_e.hermegauss(80)
        w = w / w.sum()
        mu = (1 / (1 + np.exp(-(eta[:, None] + SD_ITEM[kind] * x[None, :])))) @ w
        ey2 = mu
    sub = Subsets(codes)
    n = np.full(len(mu), M / len(mu))
    v = sub.v(n, n * mu, np.array([float(np.sum(n * ey2))]), "gaussian")
    return np.concatenate([sub.shapley(v)[0], [1 - v[0, sub.full]]])


def simulate(rng, kind: str, n_items: int, unbalanced: bool, null_factor: str | None = None):
    grid = np.array(list(itertools.product(*[range(L) for L in LEVELS])))
    present = np.ones(len(grid), dtype=bool)
    if unbalanced:
        present[[3, 12]] = False
    cells = np.flatnonzero(present)
    u = rng.normal(0, SD_ITEM[kind], n_items)
    eta = cell_means(kind)[cells][:, None] + u[None, :]
    if kind == "gaussian":
        y = eta + rng.normal(0, SD_NOISE, eta.shape)
    else:
        y = (rng.random(eta.shape) < 1 / (1 + np.exp(-eta))).astype(float)
    ci, ii = np.meshgrid(np.arange(len(cells)), np.arange(n_items), indexing="ij")
    keep = np.ones(y.shape, dtype=bool) if not unbalanced else rng.random(y.shape) >= 0.1
    df = pd.DataFrame({f: grid[cells][ci[keep], j] for j, f in enumerate(FACTORS)})
    df["item"] = ii[keep]
    df["y"] = y[keep]
    if null_factor == "crossed":  # D: no effect; the same items at both levels
        df = pd.concat([df.assign(D=0), df.assign(D=1, y=_redraw(rng, kind, df, cells, u))], ignore_index=True)
    elif null_factor == "nested":  # D: no effect; half of the items at each level (items nested in D)
        df["D"] = (df["item"] >= n_items // 2).astype(int)
    return df, present


def _redraw(rng, kind, df, cells, u):
    grid = np.array(list(itertools.product(*[range(L) for L in LEVELS])))
    idx = {tuple(g): i for i, g in enumerate(grid)}
    eta = cell_means(kind)[[idx[tuple(r)] for r in df[FACTORS].to_numpy()]] + u[df["item"].to_numpy()]
    if kind == "gaussian":
        return eta + rng.normal(0, SD_NOISE, len(eta))
    return (rng.random(len(eta)) < 1 / (1 + np.exp(-eta))).astype(float)


def coverage(kind: str, n_items: int, unbalanced: bool, R: int, B: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    truth = None
    hit = {"pct": np.zeros(4), "adj": np.zeros(4), "above": np.zeros(4), "below": np.zeros(4)}
    est = {"shapley": np.zeros(4), "adj": np.zeros(4), "width": np.zeros(4)}
    for r in range(R):
        df, present = simulate(rng, kind, n_items, unbalanced)
        if truth is None:
            truth = population(kind, present)
        res = attribute(df, "y", FACTORS, item="item", bootstrap=B, seed=r, noise_floor_permutations=0)
        t = res.table.set_index("effect").loc[FACTORS + ["residual"]]
        hit["pct"] += (t["ci_low"].to_numpy() <= truth) & (truth <= t["ci_high"].to_numpy())
        lo, hi = t["adj_ci_low"].to_numpy(), t["adj_ci_high"].to_numpy()
        hit["adj"] += (lo <= truth) & (truth <= hi)
        hit["above"] += truth > hi
        hit["below"] += truth < lo
        est["shapley"] += t["shapley"].to_numpy()
        est["adj"] += t["shapley_adj"].to_numpy()
        est["width"] += hi - lo
    return {"truth": truth, **{k: v / R for k, v in hit.items()},
            "mean_shapley": est["shapley"] / R, "mean_adj": est["adj"] / R, "width": est["width"] / R}


def false_positives(kind: str, n_items: int, R: int, perms: int, seed: int, null: str = "crossed") -> int:
    """How many of R null data sets put D above its noise floor."""
    rng = np.random.default_rng(seed)
    fp = 0
    factors = FACTORS + ["D"]
    for r in range(R):
        df, _ = simulate(rng, kind, n_items, False, null_factor=null)
        data = prepare(df, "y", factors, ["item"], "gaussian")
        sub = Subsets(data.cell_codes)
        total = np.array([data.cell_q.sum()])
        shap = sub.shapley(sub.v(data.cell_n, data.cell_s, total, "gaussian"))[0]
        # the stream attribute() gives D: SeedSequence(seed).spawn(2)[1], then one child per factor
        seq = np.random.SeedSequence(r).spawn(2)[1]
        _, info = noise_floor(data, sub, "gaussian", perms, seq, float(total[0]), shap, only=[3])
        fp += bool(info["factors"]["D"]["above_noise"])
    return fp


def clopper_pearson(x: int, n: int, level: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    a = (1 - level) / 2
    lo = beta.ppf(a, x, n - x + 1) if x > 0 else 0.0
    hi = beta.ppf(1 - a, x + 1, n - x) if x < n else 1.0
    return float(lo), float(hi)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=int, default=300)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--items", default="20,60,200")
    ap.add_argument("--kinds", default="gaussian,binary")
    ap.add_argument("--designs", default="balanced,unbalanced")
    ap.add_argument("--fp-datasets", type=int, default=0, help="data sets for the noise floor's false positives")
    ap.add_argument("--fp-items", default=None, help="item counts for the false positives (default --items)")
    args = ap.parse_args()
    items = [int(x) for x in args.items.split(",")]
    if args.datasets:
        print("| outcome | design | items | effect | population | mean shapley | mean shapley_adj | "
              "coverage ci | coverage adj_ci | population above / below adj_ci | mean width adj_ci |")
        print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, design, n in itertools.product(args.kinds.split(","), args.designs.split(","), items):
        if not args.datasets:
            break
        t0 = time.time()
        c = coverage(kind, n, design == "unbalanced", args.datasets, args.bootstrap, seed=n)
        for j, f in enumerate(FACTORS + ["residual"]):
            print(f"| {kind} | {design} | {n} | {f} | {c['truth'][j]:.4f} | {c['mean_shapley'][j]:.4f} | "
                  f"{c['mean_adj'][j]:.4f} | {c['pct'][j]:.3f} | {c['adj'][j]:.3f} | "
                  f"{c['above'][j]:.3f} / {c['below'][j]:.3f} | {c['width'][j]:.4f} |", flush=True)
        print(f"<!-- {kind} {design} {n}: {args.datasets} data sets, {time.time() - t0:.0f} s -->", flush=True)
    if not args.fp_datasets:
        return
    fp_items = [int(x) for x in (args.fp_items or args.items).split(",")]
    print("\n| outcome | items | null factor D | false positives | data sets | rate | 95% CI of the rate |")
    print("|---|---:|---|---:|---:|---:|---|")
    total = hits = 0
    for kind, n, null in itertools.product(args.kinds.split(","), fp_items, ("crossed", "nested")):
        t0 = time.time()
        fp = false_positives(kind, n, args.fp_datasets, 100, seed=1000 + n, null=null)
        lo, hi = clopper_pearson(fp, args.fp_datasets)
        total, hits = total + args.fp_datasets, hits + fp
        print(f"| {kind} | {n} | {null} with the items | {fp} | {args.fp_datasets} | {fp / args.fp_datasets:.4f} | "
              f"{lo:.4f}-{hi:.4f} |  <!-- {time.time() - t0:.0f} s -->", flush=True)
    lo, hi = clopper_pearson(hits, total)
    print(f"| all | | | {hits} | {total} | {hits / total:.4f} | {lo:.4f}-{hi:.4f} |")


if __name__ == "__main__":
    main()
