"""reprogrid.explain: exact Shapley contributions on synthetic grids with known effects."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from reprogrid.cli import main
from reprogrid.errors import UserError
from reprogrid.explain import explain, parse_levels, shapley_matrix
from reprogrid.stats import item_bootstrap_means

LOW = {"a": "a0", "b": "b0", "c": "c0"}
HIGH = {"a": "a1", "b": "b1", "c": "c1"}
FACTORS = ["a", "b", "c", "d"]


def grid(fn, d_levels=("d0",)) -> pd.DataFrame:
    rows = []
    for a, b, c, d in itertools.product(("a0", "a1"), ("b0", "b1"), ("c0", "c1"), d_levels):
        rows.append({"cell_id": f"{a}{b}{c}{d}", "a": a, "b": b, "c": c, "d": d,
                     "score": fn(a == "a1", b == "b1", c == "c1", d), "status": "ok"})
    return pd.DataFrame(rows)


def contrib(res) -> dict:
    return dict(zip(res.contributions["factor"], res.contributions["contribution"]))


def test_additive_effects_are_recovered_exactly():
    df = grid(lambda a, b, c, d: 0.1 + 0.2 * a + 0.05 * b - 0.03 * c)
    res = explain(df, "score", LOW, HIGH, factors=FACTORS)
    assert res.complete and res.differing == ["a", "b", "c"]
    assert contrib(res) == pytest.approx({"a": 0.2, "b": 0.05, "c": -0.03}, abs=1e-12)
    assert res.low_value == pytest.approx(0.1) and res.high_value == pytest.approx(0.32)
    assert res.contributions["contribution"].sum() == pytest.approx(res.high_value - res.low_value, abs=1e-14)
    assert res.contributions["ci_low"].isna().all()  # no items: no bootstrap


def test_interaction_is_split_half_and_half():
    df = grid(lambda a, b, c, d: 0.1 + 0.4 * (a and b) + 0.1 * c)
    res = explain(df, "score", LOW, HIGH, factors=FACTORS)
    assert contrib(res) == pytest.approx({"a": 0.2, "b": 0.2, "c": 0.1}, abs=1e-12)
    assert sum(contrib(res).values()) == pytest.approx(0.5, abs=1e-14)


def test_held_factor_and_one_sided_factor():
    df = grid(lambda a, b, c, d: 0.1 + 0.2 * a + 0.3 * c + 0.1 * (a and c))
    # c held at c1 on both sides; b named on one side only -> held too
    res = explain(df, "score", {"a": "a0", "b": "b1", "c": "c1"}, {"a": "a1", "c": "c1"}, factors=FACTORS)
    assert res.differing == ["a"] and res.held["c"] == "c1" and res.held["b"] == "b1"
    assert contrib(res) == pytest.approx({"a": 0.3}, abs=1e-12)


def test_unnamed_factor_with_several_levels_is_averaged():
    df = grid(lambda a, b, c, d: 0.1 + 0.2 * a + (0.4 if d == "d1" and a else 0.0), d_levels=("d0", "d1"))
    res = explain(df, "score", LOW, HIGH, factors=FACTORS)
    assert res.averaged_over == {"d": ["d0", "d1"]}
    assert contrib(res)["a"] == pytest.approx(0.2 + 0.2, abs=1e-12)
    assert contrib(res)["b"] == pytest.approx(0.0, abs=1e-12)


def test_levels_match_across_types():
    df = grid(lambda a, b, c, d: 0.5).assign(context_length=lambda t: np.where(t["a"] == "a1", 8192, 4096),
                                             chat_template=lambda t: t["b"] == "b1")
    df["score"] = 0.1 + 0.2 * (df["context_length"] == 8192) + 0.3 * df["chat_template"]
    res = explain(df, "score", {"context_length": "4096", "chat_template": "false", "c": "c0"},
                  {"context_length": "8192", "chat_template": "True", "c": "c0"}, factors=["c", "d"])
    assert contrib(res) == pytest.approx({"context_length": 0.2, "chat_template": 0.3}, abs=1e-12)
    assert list(res.contributions["high_level"]) == [8192, True]


def test_missing_cells_are_named():
    df = grid(lambda a, b, c, d: 0.1 + 0.2 * a)
    df = df[~((df["a"] == "a1") & (df["b"] == "b0") & (df["c"] == "c1"))]
    res = explain(df, "score", LOW, HIGH, factors=FACTORS)
    assert not res.complete and res.contributions.empty
    assert res.missing_cells == [{"a": "a1", "b": "b0", "c": "c1", "d": "d0"}]


def test_failed_cells_count_as_missing():
    df = grid(lambda a, b, c, d: 0.1)
    df.loc[(df["a"] == "a1") & (df["b"] == "b1") & (df["c"] == "c1"), "status"] = "failed"
    res = explain(df, "score", LOW, HIGH, factors=FACTORS)
    assert res.missing_cells == [{"a": "a1", "b": "b1", "c": "c1", "d": "d0"}]


def brute_shapley(v: dict, k: int) -> list[float]:
    phi = [0.0] * k
    for perm in itertools.permutations(range(k)):
        mask = 0
        for i in perm:
            phi[i] += v[mask | 1 << i] - v[mask]
            mask |= 1 << i
    n = math.factorial(k)
    return [p / n for p in phi]


def test_shapley_matrix_matches_permutation_definition():
    rng = np.random.default_rng(3)
    for k in (1, 2, 4):
        v = {m: float(x) for m, x in enumerate(rng.random(1 << k))}
        phi = shapley_matrix(k) @ np.array([v[m] for m in range(1 << k)])
        assert phi == pytest.approx(brute_shapley(v, k), abs=1e-12)
        assert phi.sum() == pytest.approx(v[(1 << k) - 1] - v[0], abs=1e-12)


def samples_grid(n_items=30, seed=1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for a, b in itertools.product(("a0", "a1"), ("b0", "b1")):
        p = 0.2 + 0.5 * (a == "a1") + 0.1 * (b == "b1")
        for t in ("t1", "t2"):
            for i in range(n_items):
                rows.append({"a": a, "b": b, "task": t, "item_id": str(i), "score": float(rng.random() < p)})
    return pd.DataFrame(rows)


def test_bootstrap_over_items_is_deterministic_and_covers_the_estimate():
    df = samples_grid()
    kw = dict(item="item_id", bootstrap=200, factors=["a", "b"])
    r1 = explain(df, "score", {"a": "a0", "b": "b0"}, {"a": "a1", "b": "b1"}, seed=7, **kw)
    r2 = explain(df, "score", {"a": "a0", "b": "b0"}, {"a": "a1", "b": "b1"}, seed=7, **kw)
    r3 = explain(df, "score", {"a": "a0", "b": "b0"}, {"a": "a1", "b": "b1"}, seed=8, **kw)
    pd.testing.assert_frame_equal(r1.contributions, r2.contributions)
    assert not r1.contributions[["ci_low", "ci_high"]].equals(r3.contributions[["ci_low", "ci_high"]])
    t = r1.contributions
    assert (t["ci_low"] <= t["contribution"]).all() and (t["contribution"] <= t["ci_high"]).all()
    assert t["contribution"].sum() == pytest.approx(r1.high_value - r1.low_value, abs=1e-14)
    assert r1.n_items == 60  # (task, item_id) pairs
    means = df.groupby(["a", "b"])["score"].mean()
    assert r1.low_value == pytest.approx(means[("a0", "b0")]) and r1.high_value == pytest.approx(means[("a1", "b1")])


def test_item_bootstrap_keeps_item_counts_and_resamples_jointly():
    # two cells share items 0..4; a third cell has its own items: identical rows -> identical replicates
    x = np.array([[1, 0, 1, 0, 1, np.nan], [1, 0, 1, 0, 1, np.nan], [np.nan] * 5 + [1.0]])
    reps = item_bootstrap_means(x, 50, seed=0)
    assert reps.shape == (50, 3)
    assert np.array_equal(reps[:, 0], reps[:, 1])
    assert np.all(reps[:, 2] == 1.0)
    assert np.array_equal(reps, item_bootstrap_means(x, 50, seed=0))


def test_parse_levels_and_errors():
    assert parse_levels("a=1, b = x", "--low") == {"a": "1", "b": "x"}
    assert parse_levels("", "--low") == {}
    for bad in ("a", "a=1,,b=2", "a=1,a=2", "=1"):
        with pytest.raises(UserError):
            parse_levels(bad, "--low")
    df = grid(lambda a, b, c, d: 0.1)
    with pytest.raises(UserError, match="not a column"):
        explain(df, "score", {"zz": "1"}, {"zz": "2"})
    with pytest.raises(UserError, match="no column"):
        explain(df, "nope", LOW, HIGH)


# ---------------------------------------------------------------------------------------------------
# CLI


def test_cli_writes_contributions(tmp_path, capsys):
    df = samples_grid()
    src = tmp_path / "samples.parquet"
    df.to_parquet(src, index=False)
    out = tmp_path / "out"
    rc = main(["explain", str(src), "--response", "score", "--low", "a=a0,b=b0", "--high", "a=a1,b=b1",
               "--item", "item_id", "--factors", "a,b", "--bootstrap", "100", "--seed", "3", "--out", str(out)])
    assert rc == 0
    t = pd.read_csv(out / "contributions.csv")
    assert list(t.columns[:4]) == ["factor", "contribution", "ci_low", "ci_high"]
    assert list(t["factor"]) == ["a", "b"]
    summary = json.loads((out / "summary.json").read_text())
    assert t["contribution"].sum() == pytest.approx(summary["gap"], abs=1e-9)
    assert summary["complete"] and summary["bootstrap"] == 100


def test_cli_missing_cells_exit_1_and_listed(tmp_path, capsys):
    df = grid(lambda a, b, c, d: 0.1)
    df = df[~((df["a"] == "a1") & (df["b"] == "b1"))]
    src = tmp_path / "cells.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "out"
    rc = main(["explain", str(src), "--response", "score", "--low", "a=a0,b=b0,c=c0", "--high", "a=a1,b=b1,c=c1",
               "--factors", "a,b,c,d", "--out", str(out)])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "missing cell: a=a1, b=b1, c=c0, d=d0" in err and "missing cell: a=a1, b=b1, c=c1, d=d0" in err
    assert not (out / "contributions.csv").exists()
    listed = yaml.safe_load((out / "missing_cells.yaml").read_text())["missing_cells"]
    assert {"a": "a1", "b": "b1", "c": "c0", "d": "d0"} in listed and len(listed) == 2


@pytest.mark.parametrize("args, needle", [
    (["--low", "zz=1", "--high", "zz=2"], "--low: factor 'zz' is not a column"),
    (["--low", "a", "--high", "a=a1"], "--low: 'a' is not 'factor=level'"),
    (["--low", "a=a0", "--high", "a=a1", "--response", "a"], "is the response"),
])
def test_cli_bad_input_exit_2_one_line(tmp_path, capsys, args, needle):
    src = tmp_path / "cells.csv"
    grid(lambda a, b, c, d: 0.1).to_csv(src, index=False)
    argv = ["explain", str(src), "--out", str(tmp_path / "o")] + args
    if "--response" not in args:
        argv += ["--response", "score"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]
    assert not (tmp_path / "o").exists()


def test_cli_unreadable_input(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "nope.parquet"), "--response", "score", "--low", "a=1",
                 "--high", "a=2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "file not found" in err[0]


# No silent misreads: infinite responses, missing levels, left-out rows, text levels, error lines with the file


def test_infinite_response_is_refused_naming_the_column():
    df = grid(lambda a, b, c, d: 0.1)
    df.loc[3, "score"] = np.inf
    with pytest.raises(UserError, match=r"--response: column 'score' has 1 infinite value"):
        explain(df, "score", LOW, HIGH, factors=FACTORS)


def test_missing_factor_level_is_refused_naming_the_column():
    df = grid(lambda a, b, c, d: 0.1)
    df.loc[5, "c"] = None  # before: the row was dropped silently and the path reported complete
    with pytest.raises(UserError, match=r"^c: factor column 'c' has 1 missing value"):
        explain(df, "score", LOW, HIGH, factors=FACTORS)
    s = samples_grid()
    s.loc[2, "item_id"] = None
    with pytest.raises(UserError, match=r"^item_id: item column 'item_id' has 1 missing"):
        explain(s, "score", {"a": "a0"}, {"a": "a1"}, item="item_id", factors=["a", "b"], bootstrap=10)


def test_rows_without_a_response_are_left_out_and_counted():
    df = grid(lambda a, b, c, d: 0.1 + 0.2 * a + 0.1 * b, d_levels=("d0", "d1"))
    df.loc[(df.a == "a1") & (df.b == "b0") & (df.c == "c0") & (df.d == "d1"), "score"] = np.nan
    df.loc[(df.a == "a0") & (df.b == "b0") & (df.c == "c0") & (df.d == "d0"), "status"] = "failed"
    res = explain(df, "score", {"a": "a0", "b": "b0", "c": "c1"}, {"a": "a1", "b": "b1", "c": "c1"},
                  factors=FACTORS)
    assert res.left_out == {"status not ok": 1, "no score": 1}
    assert res.summary()["left_out"] == {"status not ok": 1, "no score": 1}
    assert contrib(res) == pytest.approx({"a": 0.2, "b": 0.1}, abs=1e-12)  # neither row was on this path
    res = explain(df, "score", LOW, HIGH, factors=FACTORS)  # both were: their cells are missing, not dropped
    assert not res.complete and len(res.missing_cells) == 2


def test_cli_levels_spelled_none_and_na_stay_levels_and_numbers_keep_their_type(tmp_path, capsys):
    df = grid(lambda a, b, c, d: 0.1 + 0.2 * a + 0.3 * b)
    df["a"] = df["a"].map({"a0": "None", "a1": "NA"})
    df["b"] = df["b"].map({"b0": 4096, "b1": 8192})
    src = tmp_path / "cells.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "out"
    rc = main(["explain", str(src), "--response", "score", "--low", "a=None,b=4096,c=c0", "--high",
               "a=NA,b=8192,c=c0", "--factors", "a,b,c,d", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    got = {r["factor"]: (r["low_level"], r["high_level"], r["contribution"]) for r in summary["contributions"]}
    assert got == {"a": ("None", "NA", pytest.approx(0.2)), "b": (4096, 8192, pytest.approx(0.3))}
    assert summary["held"] == {"c": "c0", "d": "d0"} and summary["left_out"] == {}


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.assign(score=t.score.astype(object).where(t.index != 2, "inf")),
     "--response: column 'score' has 1 infinite value"),
    (lambda t: t.assign(c=t.c.where(t.index != 2, "")), "c: factor column 'c' has 1 missing value"),
])
def test_cli_error_lines_name_the_file(tmp_path, capsys, edit, needle):
    src = tmp_path / "cells.csv"
    edit(grid(lambda a, b, c, d: 0.1)).to_csv(src, index=False)
    rc = main(["explain", str(src), "--response", "score", "--low", "a=a0", "--high", "a=a1", "--factors", "a,b,c,d",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: INPUT {src}: {needle}"), err
    assert not (tmp_path / "o").exists()


def test_cli_announces_left_out_rows(tmp_path, capsys):
    df = grid(lambda a, b, c, d: 0.1 + 0.2 * a)
    df.loc[df.c == "c1", "status"] = "failed"
    src = tmp_path / "cells.csv"
    df.to_csv(src, index=False)
    rc = main(["explain", str(src), "--response", "score", "--low", "a=a0,c=c0", "--high", "a=a1,c=c0",
               "--factors", "a,b,c,d", "--out", str(tmp_path / "o")])
    assert rc == 0
    assert f"note: INPUT {src}: 4 row(s) left out (status not ok)" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Paired, task-clustered tests of contributions


def _items_table(rng, n_items=30, tasks=3, binary=True):
    rows = []
    for t in range(tasks):
        for i in range(n_items):
            base = rng.normal(0, 1)
            for a, b in itertools.product(("a0", "a1"), ("b0", "b1")):
                eta = base + 0.6 * (a == "a1") + 0.2 * (b == "b1") + rng.normal(0, 0.7)
                y = float(rng.random() < 1 / (1 + np.exp(-eta))) if binary else float(eta)
                rows.append({"task": f"t{t}", "item": f"i{i}", "a": a, "b": b, "score": y})
    return pd.DataFrame(rows)


def test_one_step_on_binary_scores_is_an_exact_mcnemar_test():
    from statsmodels.regression.linear_model import OLS
    from statsmodels.stats.contingency_tables import mcnemar

    df = _items_table(np.random.default_rng(0))
    res = explain(df, "score", {"a": "a0", "b": "b0"}, {"a": "a1", "b": "b0"}, item="item", bootstrap=50,
                  factors=["a", "b"])
    row = res.contributions.iloc[0]
    assert row["test"] == "mcnemar_exact" and row["n_pairs"] == 90
    w = df[df.b == "b0"].pivot_table(index=["task", "item"], columns="a", values="score")
    table = pd.crosstab(w["a0"], w["a1"]).reindex(index=[1.0, 0.0], columns=[1.0, 0.0], fill_value=0)
    assert row["p_value"] == pytest.approx(mcnemar(table.to_numpy(), exact=True).pvalue, abs=1e-12)
    d = (w["a1"] - w["a0"]).to_numpy()
    groups = w.index.get_level_values("task").factorize()[0]
    ref = OLS(d, np.ones(len(d))).fit(cov_type="cluster", cov_kwds={"groups": groups})
    assert row["se"] == pytest.approx(float(ref.bse[0]), rel=1e-10)
    assert row["mde"] == pytest.approx(2.8015852 * row["se"], rel=1e-6)
    assert res.summary()["gap_test"]["test"] == "mcnemar_exact"
    assert res.summary()["contributions"][0]["p_value"] == pytest.approx(row["p_value"])


def test_shapley_steps_get_a_paired_permutation_test():
    from scipy import stats as sps

    df = _items_table(np.random.default_rng(1), binary=False)
    res = explain(df, "score", {"a": "a0", "b": "b0"}, {"a": "a1", "b": "b1"}, item="item", bootstrap=50,
                  factors=["a", "b"], seed=3)
    t = res.contributions.set_index("factor")
    assert list(t["test"]) == ["paired_permutation"] * 2
    w = df.pivot_table(index=["task", "item"], columns=["a", "b"], values="score")
    d_a = 0.5 * (w[("a1", "b0")] - w[("a0", "b0")]) + 0.5 * (w[("a1", "b1")] - w[("a0", "b1")])
    assert d_a.mean() == pytest.approx(t.loc["a", "contribution"], abs=1e-12)
    ref = sps.permutation_test((d_a.to_numpy(),), np.mean, permutation_type="samples", vectorized=True,
                               n_resamples=9999, random_state=np.random.default_rng(3))
    assert t.loc["a", "p_value"] == pytest.approx(ref.pvalue)
    assert t.loc["a", "p_value"] < 0.01 and (t["mde"] > 0).all()
    out = res.summary()
    assert out["gap_test"]["n_pairs"] == 90 and out["gap_test"]["p_value"] < 0.01


def test_without_items_there_is_no_paired_test():
    df = grid(lambda a, b, c, d: 0.1 + 0.2 * a + 0.05 * b - 0.03 * c)
    res = explain(df, "score", LOW, HIGH, factors=FACTORS)
    assert "p_value" not in res.contributions.columns and res.summary()["gap_test"] == {}
