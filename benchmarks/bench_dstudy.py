"""D study checked by simulation: a design sized for a target half-width achieves it within 10%.

Two designs with known components:

- ``nested``: T tasks (random) > items nested in task, crossed with a fixed protocol of Q cells;
  task, item(task), task x protocol and residual components.
- ``crossed``: tasks x data seeds (both random, crossed) > items nested in (task, seed); every
  interaction of task and seed with the protocol.

For each design a pilot study is drawn from the true model, its components are estimated
(``gstudy.components``) and ``dstudy.design_advice`` sizes the items per (task[, seed]) for a target
half-width of a cell score (the mean of one protocol cell over the tasks, seeds and items). Then ``--studies`` studies at the advised size are simulated from the true model
(vectorised: all studies at once) and the achieved figures are measured: half-width = z * the standard
deviation of the simulated cell scores. Each target is also sized from the true components, to
separate the formula from the pilot's estimation error.

    nice -n 19 python benchmarks/bench_dstudy.py [--studies 4000] [--pilots 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from reprogrid import dstudy as D
from reprogrid import gstudy as G

Z = 1.959963984540054
ITEMS = "items per (random facets, nest) group"
NESTED = {"task": 0.15, "item": 0.8, "task:protocol": 0.05, "residual": 0.4}  # standard deviations
CROSSED = {"task": 0.3, "seed": 0.1, "task:seed": 0.15, "item": 0.7, "task:protocol": 0.1,
           "seed:protocol": 0.05, "task:seed:protocol": 0.1, "residual": 0.4}
EFFECTS = np.array([0.0, 0.3, 1.0])


def draw(rng, design: str, sizes: dict, studies: int, effects=EFFECTS) -> np.ndarray:
    """(studies, T, S, n, Q) scores from the true model (S = 1 for the nested design)."""
    T, n, Q = sizes["task"], sizes["item"], len(effects)
    S = sizes.get("seed", 1)
    sd = NESTED if design == "nested" else CROSSED
    shape = (studies, T, S, n, Q)

    def g(name, dims):
        if name not in sd:
            return 0.0
        s = tuple(shape[i] if i in dims else 1 for i in range(5))
        return rng.normal(0, sd[name], s)

    return (effects[None, None, None, None, :] + g("task", (0, 1)) + g("seed", (0, 2)) + g("task:seed", (0, 1, 2))
            + g("item", (0, 1, 2, 3)) + g("task:protocol", (0, 1, 4)) + g("seed:protocol", (0, 2, 4))
            + g("task:seed:protocol", (0, 1, 2, 4)) + g("residual", (0, 1, 2, 3, 4)))


def frame(y: np.ndarray, design: str) -> pd.DataFrame:
    T, S, n, Q = y.shape
    t, s, i, q = np.meshgrid(np.arange(T), np.arange(S), np.arange(n), np.arange(Q), indexing="ij")
    df = pd.DataFrame({"task": t.ravel(), "item_id": i.ravel(), "proto": q.ravel(), "y": y.ravel()})
    if design == "crossed":
        df["seed"] = s.ravel()
    return df


def advice(df: pd.DataFrame, design: str, halfwidth: float, difference: float) -> dict:
    random = ["task"] if design == "nested" else ["task", "seed"]
    d = G.build_design(df, "y", ["item_id"], random, [], ["proto"])
    return D.design_advice(d, G.components(d), halfwidth=halfwidth, difference=difference)


def true_advice(design: str, sizes: dict, halfwidth: float, difference: float) -> dict:
    """Advice from the true components: a pilot with zero noise in the component estimates is not
    available, so the components table is built from the true variances on a tiny design."""
    rng = np.random.default_rng(0)
    df = frame(draw(rng, design, sizes, 1)[0], design)
    random = ["task"] if design == "nested" else ["task", "seed"]
    d = G.build_design(df, "y", ["item_id"], random, [], ["proto"])
    table = G.components(d)
    sd = NESTED if design == "nested" else CROSSED
    name = {"task:item": "item", "task:seed:item": "item", "task:item:protocol (residual)": "residual",
            "task:seed:item:protocol (residual)": "residual"}
    for i, r in table.iterrows():
        if r["kind"] == "random":
            table.loc[i, "component_value"] = sd[name.get(r["component"], r["component"])] ** 2
    return D.design_advice(d, table, halfwidth=halfwidth, difference=difference)


def achieved(rng, design, sizes, n_items, studies) -> float:
    """z * the standard deviation of a cell score (protocol cell 0) over simulated studies."""
    y = draw(rng, design, dict(sizes, item=int(n_items)), studies)
    return float(Z * y[..., 0].mean(axis=(1, 2, 3)).std(ddof=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=4000)
    ap.add_argument("--pilots", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(2026)
    rows = []
    for design, sizes, targets in (
            ("nested", {"task": 40, "item": 40}, (0.10, 0.08, 0.06)),
            ("crossed", {"task": 12, "seed": 4, "item": 10}, (0.225, 0.22))):
        for h in targets:
            t0 = time.time()
            ta = true_advice(design, sizes, h, 0.1)
            n_true = ta["needed"][ITEMS]["halfwidth"]
            got_true = achieved(rng, design, sizes, n_true, args.studies) if n_true else np.nan
            ratios, needs = [], []
            for _ in range(args.pilots):
                pilot = frame(draw(rng, design, sizes, 1)[0], design)
                n_adv = advice(pilot, design, h, 0.1)["needed"][ITEMS]["halfwidth"]
                if n_adv is None:
                    continue
                needs.append(n_adv)
                ratios.append(achieved(rng, design, sizes, n_adv, args.studies // 4) / h)
            ratios = np.array(ratios)
            rows.append((design, sizes, h, n_true, got_true, np.median(needs) if needs else np.nan, ratios,
                         time.time() - t0))
            print(f"| {design} | {sizes} | {h:.3f} | {n_true:.0f} | {got_true:.4f} ({got_true / h - 1:+.1%}) | "
                  f"{np.median(needs):.0f} ({min(needs):.0f}-{max(needs):.0f}) | "
                  f"{np.median(ratios) - 1:+.1%} | {np.mean(np.abs(ratios - 1) <= 0.10):.2f} | {len(ratios)} |",
                  flush=True)


if __name__ == "__main__":
    main()
