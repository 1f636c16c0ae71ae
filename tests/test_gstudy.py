"""Variance components (G study) and design advice (D study): known answers and simulation checks."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from reprogrid import dstudy as D
from reprogrid import gstudy as G
from reprogrid.errors import UserError


def nested_array(rng, T=5, n=6, Q=3, sd=(1.0, 0.8, 0.5, 0.3), effects=(0.0, 0.5, 1.0)):
    """task (random) > item (nested in task) crossed with a fixed protocol; task x protocol; residual."""
    ta = rng.normal(0, sd[0], T)
    it = rng.normal(0, sd[1], (T, n))
    tq = rng.normal(0, sd[2], (T, Q))
    e = rng.normal(0, sd[3], (T, n, Q))
    return np.asarray(effects)[None, None, :] + ta[:, None, None] + it[:, :, None] + tq[:, None, :] + e


def nested(rng, T=5, n=6, Q=3, sd=(1.0, 0.8, 0.5, 0.3), effects=(0.0, 0.5, 1.0)):
    y = nested_array(rng, T, n, Q, sd, effects)
    t, i, q = np.meshgrid(np.arange(T), np.arange(n), np.arange(Q), indexing="ij")
    return pd.DataFrame({"task": [f"t{x}" for x in t.ravel()], "item_id": [f"i{x}" for x in i.ravel()],
                         "proto": [f"q{x}" for x in q.ravel()], "y": y.ravel()})


def crossed(rng, T=4, S=3, n=4, Q=3, sd=0.5):
    """task x seed (random, crossed), items nested in (task, seed), fixed protocol; every interaction."""
    shape = (T, S, n, Q)
    y = (0.3 * np.arange(Q)[None, None, None, :] + rng.normal(0, 1, (T, 1, 1, 1)) + rng.normal(0, .7, (1, S, 1, 1))
         + rng.normal(0, sd, (T, S, 1, 1)) + rng.normal(0, .8, (T, S, n, 1)) + rng.normal(0, sd, (T, 1, 1, Q))
         + rng.normal(0, sd, (1, S, 1, Q)) + rng.normal(0, sd, (T, S, 1, Q)) + rng.normal(0, .3, shape))
    idx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return pd.DataFrame({"task": [f"t{x}" for x in idx[0].ravel()], "seed": idx[1].ravel(),
                         "item_id": [f"i{x}" for x in idx[2].ravel()], "proto": [f"q{x}" for x in idx[3].ravel()],
                         "y": y.ravel()})


def _reml(df, vc, groups):
    import statsmodels.formula.api as smf
    model = smf.mixedlm("y ~ C(proto)", df, groups=groups, re_formula="1" if groups == "task" else "0",
                        vc_formula={k: f"0 + C({k})" for k in vc})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(reml=True, method="bfgs", gtol=1e-12)
    out = dict(zip(model.exog_vc.names, fit.vcomp))
    if groups == "task":
        out["task"] = float(fit.cov_re.iloc[0, 0])
    out["residual"] = fit.scale
    return out


def test_components_equal_mixedlm_reml_nested():
    df = nested(np.random.default_rng(1))
    tab = G.components(G.build_design(df, "y", ["item_id"], ["task"], [], ["proto"])).set_index("component")
    df["item"] = df["task"] + df["item_id"]
    ref = _reml(df, ["item", "proto"], "task")
    ours = {"task": tab.loc["task", "estimate"], "item": tab.loc["task:item", "estimate"],
            "proto": tab.loc["task:protocol", "estimate"],
            "residual": tab.loc["task:item:protocol (residual)", "estimate"]}
    for k, v in ours.items():
        assert v > 0
        assert abs(v - ref[k]) < 1e-4, (k, v, ref[k])


def test_components_equal_mixedlm_reml_crossed_task_seed():
    df = crossed(np.random.default_rng(23), T=4, S=3, n=3, Q=2, sd=0.6)  # every EMS estimate > 0
    tab = G.components(G.build_design(df, "y", ["item_id"], ["task", "seed"], [], ["proto"])).set_index("component")
    df["g"] = 1
    s = df["seed"].astype(str)
    df = df.assign(item=df.task + s + df.item_id, ts=df.task + s, tq=df.task + df.proto, sq=s + df.proto,
                   tsq=df.task + s + df.proto)
    ref = _reml(df, ["task", "seed", "ts", "item", "tq", "sq", "tsq"], "g")
    names = {"task": "task", "seed": "seed", "ts": "task:seed", "item": "task:seed:item", "tq": "task:protocol",
             "sq": "seed:protocol", "tsq": "task:seed:protocol", "residual": "task:seed:item:protocol (residual)"}
    for k, row in names.items():
        v = tab.loc[row, "estimate"]
        assert v > 0, (row, v)
        assert abs(v - ref[k]) < 1e-4 * max(1.0, abs(ref[k])), (k, v, ref[k])


def test_components_recover_known_values_and_intervals_cover():
    rng = np.random.default_rng(7)
    truth = {"task": 1.0, "task:item": 0.64, "task:protocol": 0.25, "task:item:protocol (residual)": 0.09}
    hits = {k: 0 for k in truth}
    est = {k: [] for k in truth}
    R = 300
    for _ in range(R):
        df = nested(rng, T=8, n=10, Q=3)
        tab = G.components(G.build_design(df, "y", ["item_id"], ["task"], [], ["proto"])).set_index("component")
        for k, v in truth.items():
            est[k].append(tab.loc[k, "estimate"])
            hits[k] += tab.loc[k, "ci_low"] <= v <= tab.loc[k, "ci_high"]
    for k, v in truth.items():  # unbiased: mean within 3 Monte Carlo standard errors
        assert abs(np.mean(est[k]) - v) < 3 * np.std(est[k]) / np.sqrt(R), k
        assert hits[k] / R >= 0.92, (k, hits[k] / R)  # MLS intervals are at or above nominal


def test_fixed_effect_and_g_coefficient():
    df = nested(np.random.default_rng(2), T=30, n=20, sd=(0.5, 0.5, 0.1, 0.2))
    d = G.build_design(df, "y", ["item_id"], ["task"], [], ["proto"])
    tab = G.components(d).set_index("component")
    # mean squared protocol effect: ((-.5)^2 + 0 + .5^2) / 3
    assert tab.loc["protocol", "estimate"] == pytest.approx(1 / 6, rel=0.15)
    g = G.coefficients(d, tab.reset_index())
    expect_rel = tab.loc["task:protocol", "component_value"] / 30 + tab.loc[
        "task:item:protocol (residual)", "component_value"] / 600
    assert g["relative_error_variance"] == pytest.approx(expect_rel)
    assert 0.9 < g["G"] < 1 and g["Phi"] < g["G"]


def test_unbalanced_and_repeated_scores_are_refused():
    df = nested(np.random.default_rng(3))
    with pytest.raises(G.Unbalanced, match="design: unbalanced design: 1 of 90"):
        G.build_design(df.iloc[1:], "y", ["item_id"], ["task"], [], ["proto"], drop_incomplete=False)
    d = G.build_design(df.iloc[1:], "y", ["item_id"], ["task"], [], ["proto"])  # the incomplete cell goes
    assert d.y.shape == (5, 6, 2) and "1 cell(s) without a score for every item: q0" in d.dropped[
        "protocol cells left out"]
    with pytest.raises(G.Unbalanced, match="items per group 5-6"):  # one item fewer in one task
        G.build_design(df[~((df.task == "t0") & (df.item_id == "i0"))], "y", ["item_id"], ["task"], [], ["proto"])
    with pytest.raises(G.Unbalanced, match="several scores"):
        G.build_design(df, "y", ["item_id"], ["task"], [], [])
    with pytest.raises(UserError, match="nope: no such column"):
        G.build_design(df, "y", ["item_id"], ["nope"], [], ["proto"])


def test_design_advice_sized_design_achieves_its_halfwidth_and_power():
    """D study: the items per task the advice asks for give the target half-width within 10%, and the
    advised size for a 0.3 difference detects it about 80% of the time (simulation from the true model)."""
    rng = np.random.default_rng(5)
    sd, T = (0.15, 0.8, 0.05, 0.4), 40
    df = nested(rng, T=T, n=40, sd=sd, effects=(0.0, 0.3, 1.0))
    d = G.build_design(df, "y", ["item_id"], ["task"], [], ["proto"])
    adv = D.design_advice(d, G.components(d), halfwidth=0.08, difference=0.1)
    need = adv["needed"]["items per (random facets, nest) group"]
    assert adv["needed_items_per_cell"]["halfwidth"] == need["halfwidth"] * T
    cell = [nested_array(rng, T, int(need["halfwidth"]), sd=sd)[:, :, 0].mean() for _ in range(3000)]
    assert 1.959964 * np.std(cell) == pytest.approx(0.08, rel=0.10)
    sims = [nested_array(rng, T, int(need["difference_same_nest"]), sd=sd, effects=(0.0, 0.1, 1.0))
            for _ in range(3000)]
    diff = np.array([y[:, :, 1].mean() - y[:, :, 0].mean() for y in sims])
    power = np.mean(np.abs(diff) / np.std(diff) > 1.959964)
    assert 0.72 <= power <= 0.88, power
    assert adv["minimum_detectable_effect"]["same_nest"] > 0
    assert adv["needed"]["task"]["halfwidth"] is not None


def test_cli_writes_components_and_advice(tmp_path, capsys):
    """A samples table as the workflow writes it: task column, data_seed and context_length among the
    factors; items nested in (task, seed, length); two crossed protocol factors."""
    import json

    from reprogrid.cli import main

    rng = np.random.default_rng(11)
    rows = []
    for t, s, L in np.ndindex(3, 2, 2):
        for i in range(5):
            base = rng.normal(0, 0.2) + 0.3 * t + 0.1 * s - 0.2 * L
            for a, b in np.ndindex(2, 2):
                rows.append({"task": f"task{t}", "data_seed": s, "context_length": [4096, 8192][L],
                             "item_id": f"task{t}/{i}", "template": ["own", "lm_eval"][a], "quant": ["q8", "q4"][b],
                             "score": float(rng.random() < np.clip(0.5 + base + 0.1 * a, 0, 1))})
    path = tmp_path / "samples.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    out = tmp_path / "g"
    rc = main(["gstudy", str(path), "--response", "score", "--item", "item_id",
               "--factors", "template,quant,data_seed,context_length", "--difference", "0.03", "--out", str(out)])
    assert rc == 0
    tab = pd.read_csv(out / G.CSV_NAME)
    assert list(tab.columns) == G.COLUMNS
    names = set(tab["component"])
    assert {"task", "data_seed", "task:data_seed:context_length:item", "context_length", "protocol",
            "task:data_seed:context_length:item:protocol (residual)"} <= names
    det = json.loads((out / G.JSON_NAME).read_text())
    assert det["design"]["facets"]["item"]["levels"] == 5
    assert det["design_advice"]["targets"]["difference"] == 0.03
    assert det["design_advice"]["items_per_cell"] == 5 * 3 * 2
    assert 0 <= det["coefficients"]["G"] <= 1
    failed = tmp_path / "failed.csv"  # one protocol cell lacks a score: left out and named
    pd.DataFrame(rows[1:]).to_csv(failed, index=False)
    rc = main(["gstudy", str(failed), "--response", "score", "--item", "item_id",
               "--factors", "template,quant,data_seed,context_length", "--out", str(out)])
    assert rc == 0
    assert "protocol cells left out: 1 cell(s) without a score for every item: own | q8" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    pd.DataFrame([r for r in rows if r["item_id"] != "task0/0" or r["data_seed"] != 0]).to_csv(bad, index=False)
    rc = main(["gstudy", str(bad), "--response", "score", "--item", "item_id",
               "--factors", "template,quant,data_seed,context_length", "--out", str(out)])
    assert rc == 2
    assert f"error: INPUT {bad}: design: unbalanced design: 8 of 240" in capsys.readouterr().err


def test_design_advice_sizes_equal_the_closed_form():
    """Known answer of the sizing formula: for tasks > items(task) x protocol the error variance of a cell
    score is (s2_task + s2_task:protocol) / T + (s2_item + s2_residual) / (T n), so the items per task for
    half-width h are the smallest n with z^2 * that <= h^2; the tasks for a paired difference delta at 80%
    power the smallest T with (z + z_0.8)^2 * 2 (s2_task:protocol / T + s2_residual / (T n)) <= delta^2."""
    from scipy.stats import norm

    df = nested(np.random.default_rng(11), T=10, n=8, sd=(0.3, 0.8, 0.2, 0.5))
    d = G.build_design(df, "y", ["item_id"], ["task"], [], ["proto"])
    tab = G.components(d)
    comp = dict(zip(tab["component"], tab["component_value"]))
    s_t, s_i, s_tq, s_e = (comp[c] for c in ("task", "task:item", "task:protocol",
                                              "task:item:protocol (residual)"))
    z, zp = norm.ppf(0.975), norm.ppf(0.975) + norm.ppf(0.8)
    T, n = 10, 8
    se_cell = np.sqrt((s_t + s_tq) / T + (s_i + s_e) / (T * n))
    h = 0.9 * z * se_cell  # reachable with more items: the item part is large enough to shrink by 10%
    assert z * np.sqrt((s_t + s_tq) / T) < h
    delta = 2.0 * zp * np.sqrt(2 * (s_tq / T + s_e / (T * n))) / 3
    adv = D.design_advice(d, tab, halfwidth=h, difference=delta)
    items = adv["needed"]["items per (random facets, nest) group"]
    expect_n = int(np.ceil((s_i + s_e) / T / ((h / z) ** 2 - (s_t + s_tq) / T)))
    assert items["halfwidth"] == expect_n
    assert z * np.sqrt((s_t + s_tq) / T + (s_i + s_e) / (T * expect_n)) <= h
    assert z * np.sqrt((s_t + s_tq) / T + (s_i + s_e) / (T * (expect_n - 1))) > h
    expect_t = int(np.ceil(2 * (s_tq + s_e / n) / (delta / zp) ** 2))
    assert adv["needed"]["task"]["difference_same_nest"] == expect_t
    assert adv["cell_score"]["se"] == pytest.approx(se_cell, rel=1e-12)
    assert adv["minimum_detectable_effect"]["same_nest"] == pytest.approx(
        zp * np.sqrt(2 * (s_tq / T + s_e / (T * n))), rel=1e-12)
    # a half-width below what infinitely many items give (the task part alone) cannot be reached with items
    low = 0.5 * z * np.sqrt((s_t + s_tq) / T)
    assert D.design_advice(d, tab, halfwidth=low)["needed"]["items per (random facets, nest) group"][
        "halfwidth"] is None
