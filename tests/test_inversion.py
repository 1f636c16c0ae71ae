"""The test-inversion interval of the population Shapley shares: exact algebra of the worlds, known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm, t

from reprogrid.attribution import attribute
from reprogrid.attribution.inversion import _World, expanded_alpha, inversion_intervals
from reprogrid.attribution.prepare import prepare
from reprogrid.attribution.resample import bootstrap_shares
from reprogrid.attribution.subsets import Subsets


def grid(seed: int, n_items: int = 30, drop_cell: bool = False) -> pd.DataFrame:
    """A (2) x B (3) x items crossed; y = 0.8 (A - 1/2) + item + noise; B no effect."""
    rng = np.random.default_rng(seed)
    a, b, i = np.meshgrid(np.arange(2), np.arange(3), np.arange(n_items), indexing="ij")
    u = rng.normal(0, 1.0, n_items)
    y = 0.8 * (a - 0.5) + u[i] + rng.normal(0, 1.0, a.shape)
    df = pd.DataFrame({"A": a.ravel(), "B": b.ravel(), "item": i.ravel(), "y": y.ravel()})
    if drop_cell:
        df = df[~((df.A == 1) & (df.B == 2))]
    return df


def _setup(df, B=60):
    data = prepare(df, "y", ["A", "B"], ["item"], "gaussian")
    sub = Subsets(data.cell_codes)
    x = float(data.cell_q.sum())
    v = sub.v(data.cell_n, data.cell_s, np.array([x]), "gaussian")
    shap = sub.shapley(v)[0]
    out = bootstrap_shares(data, sub, "gaussian", B, 0.95, np.random.SeedSequence(1), ["item"], shap)
    return data, sub, x, v, shap, out


@pytest.mark.parametrize("drop_cell", [False, True])
def test_world_at_lambda_one_is_the_data_and_its_resamples(drop_cell):
    """With the nuisance unscaled, world lam = 1 is the data: its shares equal the estimate (row 0) and the
    bootstrap replicates (rows 1..R) to rounding, for a factor and for the residual."""
    data, sub, x, v, shap, (_, _, _, bshap, _, (bn, bs, bx)) = _setup(grid(0, drop_cell=drop_cell))
    n, s = data.cell_n, data.cell_s
    d = s / n
    Nn, Ss, X = np.vstack([n, bn]), np.vstack([s, bs]), np.concatenate([[x], bx])
    for j in range(2):
        other = data.cell_codes[:, 1 - j]
        nuis = np.array([np.sum(n[other == o] * d[other == o]) / np.sum(n[other == o]) for o in other])
        D = d - nuis  # world 0 = the nuisance part: every cell shifted by D
        gN = sub.group(Nn)
        inv = np.where(gN > 0, 1 / np.where(gN > 0, gN, 1), 0)
        w = _World(sub, inv, sub.group(Ss - Nn * D), sub.group(Nn * D), Nn, Ss, X, D, D, sub.W[:, j])
        got = w.shares(np.array([1.0]))[0]
        assert got[0] == pytest.approx(shap[j], abs=1e-12)
        np.testing.assert_allclose(got[1:], bshap[:, j], atol=1e-12)
        if not drop_cell:  # balanced: a world without the factor's part gives it exactly nothing
            assert abs(w.shares(np.array([0.0]))[0, 0]) < 1e-12


def test_expanded_levels_are_hesterbergs():
    """Phi(-sqrt(n / (n - 1)) t_{n-1, 0.975}): 0.0159 at 20 items, tends to 0.025."""
    assert expanded_alpha(0.95, 20, 1) == pytest.approx(norm.cdf(-np.sqrt(20 / 19) * t.ppf(0.975, 19)), rel=1e-12)
    assert 0.0158 < expanded_alpha(0.95, 20, 1) < 0.0160
    assert expanded_alpha(0.95, 100_000, 1) == pytest.approx(0.025, abs=1e-4)
    assert expanded_alpha(0.90, 50, 5) == pytest.approx(norm.cdf(-np.sqrt(50 / 45) * t.ppf(0.95, 45)), rel=1e-12)
    assert expanded_alpha(0.95, 0, 0) == pytest.approx(0.025, abs=1e-15)  # no sample size: the plain level


def test_interval_brackets_a_clear_share_and_is_nested_in_the_level():
    """A strong factor: the interval contains the bias-corrected estimate, lies below the percentile interval
    (which counts the noise twice) at its upper end, and the 80% interval lies inside the 95% one."""
    df = grid(3, n_items=40)
    data, sub, x, v, shap, (ci_lo, ci_hi, info, bshap, _, sums) = _setup(df, B=200)
    est = np.append(shap, 1 - v[0, sub.full])
    args = (sub, data.cell_codes, data.cell_n, data.cell_s, x, *sums, est)
    lo95, hi95 = inversion_intervals(*args, 0.95, data.n_units, 1)
    lo80, hi80 = inversion_intervals(*args, 0.80, data.n_units, 1)
    assert np.all(lo95 <= lo80 + 1e-12) and np.all(hi80 <= hi95 + 1e-12)
    assert lo95[0] > 0.02 and hi95[0] < ci_hi[0]
    assert lo95[2] < 1 - v[0, sub.full] < hi95[2] <= 1.0 + 1e-12


def test_attribute_reports_the_interval_and_its_population():
    res = attribute(grid(5), "y", ["A", "B"], item="item", bootstrap=80, seed=2, noise_floor_permutations=0)
    cal = res.details["bootstrap"]["calibrated"]
    assert cal["interval"].startswith("test-inversion bootstrap")
    assert "infinitely many items" in cal["population"]
    tab = res.table.set_index("effect")
    assert tab.loc["A", "adj_ci_low"] < tab.loc["A", "shapley_adj"] < tab.loc["A", "adj_ci_high"]
    assert tab.loc[["A", "B", "residual"], ["adj_ci_low", "adj_ci_high"]].notna().all().all()
    binom = attribute(grid(5).assign(y=lambda d: (d.y > 0).astype(float)), "y", ["A", "B"], item="item",
                      family="binomial", bootstrap=40, seed=2, noise_floor_permutations=0)
    assert binom.details["bootstrap"]["calibrated"]["interval"].startswith("normal")


def test_too_large_a_design_keeps_the_normal_interval_and_says_so(monkeypatch):
    from reprogrid.attribution import core

    df = grid(6)
    full = attribute(df, "y", ["A", "B"], item="item", bootstrap=40, seed=1, noise_floor_permutations=0)
    monkeypatch.setattr(core, "MAX_INVERSION_WORK", 10)
    small = attribute(df, "y", ["A", "B"], item="item", bootstrap=40, seed=1, noise_floor_permutations=0)
    cal = small.details["bootstrap"]["calibrated"]
    assert cal["interval"].startswith("normal") and "test inversion skipped" in cal["interval"]
    t, f = small.table.set_index("effect"), full.table.set_index("effect")
    z = 1.959963984540054
    se = cal["se"]["A"]
    assert t.loc["A", "adj_ci_high"] == pytest.approx(t.loc["A", "shapley_adj"] + z * se, rel=1e-9)
    assert t.loc["A", "shapley_adj"] == f.loc["A", "shapley_adj"]  # the estimate does not depend on the interval


def test_response_without_within_cell_variance_gets_intervals_not_a_crash():
    """Regression (CI of 6560faf): a response that is constant within cells (a per-task quantity such as a
    predicted speed-up) has zero total sum of squares in the world lam = 0 of the residual, so every
    replicate's share there is 0/0. That world is untested; the others still give an interval, and with no
    item noise at all every replicate equals the data, so the interval holds the estimate."""
    df = grid(7, n_items=6)
    df["y"] = 2.0 * df.A + 1.0 * df.B  # no item term, no noise; exact in binary, so the 0/0 is exact
    res = attribute(df, "y", ["A", "B"], item="item", bootstrap=10, seed=1, noise_floor_permutations=0)
    tab = res.table.set_index("effect")
    for eff in ("A", "B"):
        low, est, high = tab.loc[eff, ["adj_ci_low", "shapley_adj", "adj_ci_high"]]
        assert low - 1e-9 <= est <= high + 1e-9, (eff, low, est, high)
    assert tab.loc["A", "shapley_adj"] > tab.loc["B", "shapley_adj"] > 0
