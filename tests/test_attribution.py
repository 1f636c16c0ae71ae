"""Tests of the attribution engine: statsmodels agreement, exact enumeration, known components, CLI."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from reprogrid.attribution import COLUMNS, attribute, varying_factors
from reprogrid.io import read_table
from reprogrid.cli import main as cli_main
from reprogrid.errors import UserError

sm = pytest.importorskip("statsmodels.api")
smf = pytest.importorskip("statsmodels.formula.api")
from statsmodels.stats.anova import anova_lm  # noqa: E402

FACTORS3 = ["fa", "fb", "fc"]  # not "A,B,C": patsy's C() would clash with a column named C


def balanced3(reps: int = 6, seed: int = 0, noise: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    grid = list(itertools.product(range(2), range(3), ["x", "y"]))
    df = pd.DataFrame([g for g in grid for _ in range(reps)], columns=FACTORS3)
    df["y"] = (1.0 * df.fa + 0.6 * (df.fb == 2) + 0.8 * df.fa * (df.fc == "y") + 0.3 * (df.fb == 1) * (df.fc == "x")
               + rng.normal(0, noise, len(df)))
    return df


def v_bruteforce(df: pd.DataFrame, y: str, subset: tuple[str, ...]) -> float:
    """R^2 of y on the full interaction of the factors in subset, from the raw rows."""
    yy = df[y].to_numpy(float)
    sst = ((yy - yy.mean()) ** 2).sum()
    if not subset:
        return 0.0
    fitted = df.groupby(list(subset))[y].transform("mean").to_numpy(float)
    return 1 - ((yy - fitted) ** 2).sum() / sst


def shapley_by_orderings(factors, v) -> dict[str, float]:
    """Exact Shapley values by averaging marginal contributions over all k! orderings."""
    out = dict.fromkeys(factors, 0.0)
    perms = list(itertools.permutations(factors))
    for order in perms:
        seen: tuple[str, ...] = ()
        for f in order:
            out[f] += v(tuple(sorted(seen + (f,)))) - v(tuple(sorted(seen)))
            seen += (f,)
    return {f: x / len(perms) for f, x in out.items()}


def anova_shares(df: pd.DataFrame, factors, y="y") -> pd.Series:
    formula = f"{y} ~ (" + " + ".join(f"C({f})" for f in factors) + ")**2"
    table = anova_lm(smf.ols(formula, data=df).fit(), typ=2)
    sst = ((df[y] - df[y].mean()) ** 2).sum()
    names = {f"C({a})": a for a in factors}
    idx = [":".join(names[p] for p in name.split(":")) if name != "Residual" else "residual" for name in table.index]
    return pd.Series(table["sum_sq"].to_numpy() / sst, index=idx), table


def by_effect(res) -> pd.DataFrame:
    return res.table.set_index("effect")


# --------------------------------------------------------------------------------------------------
# Gaussian: statsmodels, enumeration, identities
# --------------------------------------------------------------------------------------------------


def test_balanced_eta2_and_omega2_match_statsmodels_typ2():
    df = balanced3()
    res = attribute(df, "y", FACTORS3, noise_floor_permutations=0)
    assert list(res.table.columns) == COLUMNS
    assert list(res.table.effect) == ["fa", "fb", "fc", "fa:fb", "fa:fc", "fb:fc", "residual"]
    shares, table = anova_shares(df, FACTORS3)
    t = by_effect(res)
    for eff, share in shares.items():
        assert t.loc[eff, "eta2"] == pytest.approx(share, abs=1e-10), eff
    assert t.eta2.sum() == pytest.approx(1.0, abs=1e-10)  # balanced: SS add up
    sst = ((df.y - df.y.mean()) ** 2).sum()
    mse = table.loc["Residual", "sum_sq"] / table.loc["Residual", "df"]
    ss_fa, df_fa = table.loc["C(fa)", "sum_sq"], table.loc["C(fa)", "df"]
    assert t.loc["fa", "omega2"] == pytest.approx((ss_fa - df_fa * mse) / (sst + mse), abs=1e-10)
    assert np.isnan(t.loc["residual", "omega2"])
    assert res.details["balanced"] is True


def test_unbalanced_eta2_matches_statsmodels_typ2():
    df = balanced3(reps=8, seed=3).sample(frac=0.6, random_state=1)
    df = df[~((df.fa == 1) & (df.fb == 2) & (df.fc == "y"))]  # one missing cell (3-way)
    res = attribute(df, "y", FACTORS3, noise_floor_permutations=0)
    shares, _ = anova_shares(df, FACTORS3)
    t = by_effect(res)
    for eff, share in shares.items():
        assert t.loc[eff, "eta2"] == pytest.approx(share, abs=1e-9), eff
    assert res.details["balanced"] is False
    assert res.details["missing_cells"] == 1


def test_shapley_equals_exact_enumeration_and_sums_to_v_all():
    df = balanced3(reps=5, seed=7).sample(frac=0.7, random_state=2)  # unbalanced
    res = attribute(df, "y", FACTORS3, noise_floor_permutations=0)
    t = by_effect(res)
    exact = shapley_by_orderings(FACTORS3, lambda s: v_bruteforce(df, "y", s))
    for f in FACTORS3:
        assert t.loc[f, "shapley"] == pytest.approx(exact[f], abs=1e-10)
    v_all = v_bruteforce(df, "y", tuple(FACTORS3))
    assert res.details["v_all"] == pytest.approx(v_all, abs=1e-10)
    assert t.loc[FACTORS3, "shapley"].sum() == pytest.approx(v_all, abs=1e-10)
    assert t.shapley.sum() == pytest.approx(1.0, abs=1e-10)  # with the residual row
    for f in FACTORS3:  # Sobol total = v(all) - v(all but f)
        rest = tuple(sorted(set(FACTORS3) - {f}))
        assert t.loc[f, "sobol_total"] == pytest.approx(v_all - v_bruteforce(df, "y", rest), abs=1e-10)
    assert t.loc["residual", "shapley"] == pytest.approx(1 - v_all)
    # every subset's v agrees with the brute force
    for name, val in res.details["v"].items():
        subset = () if name == "(none)" else tuple(name.split(":"))
        assert val == pytest.approx(v_bruteforce(df, "y", subset), abs=1e-10)


def test_balanced_sobol_bounds_and_owen_formula():
    df = balanced3(reps=4, seed=11)
    res = attribute(df, "y", FACTORS3, noise_floor_permutations=0)
    t = by_effect(res)
    v = {tuple(sorted(s)): v_bruteforce(df, "y", tuple(sorted(s)))
         for r in range(4) for s in itertools.combinations(FACTORS3, r)}

    def component(u):  # Sobol-Hoeffding component by inclusion-exclusion on closed indices
        return sum((-1) ** (len(u) - len(w)) * v[tuple(sorted(w))]
                   for r in range(len(u) + 1) for w in itertools.combinations(u, r))

    for f in FACTORS3:
        first = t.loc[f, "eta2"]
        assert first == pytest.approx(res.details["first_order"][f], abs=1e-12)  # balanced: eta2 = S_j
        assert first <= t.loc[f, "shapley"] + 1e-12 <= t.loc[f, "sobol_total"] + 2e-12
        owen = sum(component(u) / len(u) for r in range(1, 4) for u in itertools.combinations(FACTORS3, r) if f in u)
        assert t.loc[f, "shapley"] == pytest.approx(owen, abs=1e-10)
    # two-way eta2 on a balanced grid is the two-way Sobol component
    assert t.loc["fa:fc", "eta2"] == pytest.approx(component(("fa", "fc")), abs=1e-10)


def test_known_variance_components_are_recovered():
    rng = np.random.default_rng(42)
    a = np.array([-1.0, 1.0])            # V_A = 1
    b = np.array([-1.0, 0.0, 1.0, 0.0])  # V_B = 0.5
    ab = np.array([[0.5, -0.5, 0.5, -0.5], [-0.5, 0.5, -0.5, 0.5]])  # V_AB = 0.25
    sigma2 = 1.25
    reps = 5000
    ia, ib = np.meshgrid(np.arange(2), np.arange(4), indexing="ij")
    ia, ib = np.repeat(ia.ravel(), reps), np.repeat(ib.ravel(), reps)
    df = pd.DataFrame({"fa": ia, "fb": ib, "fn": rng.integers(0, 3, len(ia))})  # fn: no effect
    df["y"] = a[ia] + b[ib] + ab[ia, ib] + rng.normal(0, math.sqrt(sigma2), len(df))
    total = 1 + 0.5 + 0.25 + sigma2  # = 3
    res = attribute(df, "y", ["fa", "fb", "fn"], noise_floor_permutations=0)
    t = by_effect(res)
    tol = 0.01
    assert t.loc["fa", "eta2"] == pytest.approx(1 / total, abs=tol)
    assert t.loc["fb", "eta2"] == pytest.approx(0.5 / total, abs=tol)
    assert t.loc["fa:fb", "eta2"] == pytest.approx(0.25 / total, abs=tol)
    assert t.loc["fa", "shapley"] == pytest.approx((1 + 0.25 / 2) / total, abs=tol)
    assert t.loc["fb", "shapley"] == pytest.approx((0.5 + 0.25 / 2) / total, abs=tol)
    assert t.loc["fa", "sobol_total"] == pytest.approx(1.25 / total, abs=tol)
    assert t.loc["fn", "shapley"] == pytest.approx(0.0, abs=tol)
    assert t.loc["residual", "shapley"] == pytest.approx(sigma2 / total, abs=tol)


def ols_rss(df, rhs):
    return smf.ols(f"y ~ {rhs}", data=df).fit().ssr


@pytest.mark.filterwarnings("ignore:The design matrix is rank-deficient")
def test_missing_cells_still_sum_and_type2_by_model_comparison():
    df = balanced3(reps=4, seed=5)
    df = df[~((df.fa == 1) & (df.fb == 2))]  # a whole (fa, fb) cell missing, for both fc
    res = attribute(df, "y", FACTORS3, noise_floor_permutations=0)
    t = by_effect(res)
    assert t.loc[FACTORS3, "shapley"].sum() == pytest.approx(res.details["v_all"], abs=1e-12)
    assert res.details["missing_cells"] == 2 and not res.details["balanced"]
    assert res.details["anova"]["effects"]["fa:fb"]["df"] == 1  # one interaction df is lost
    # statsmodels' Wald-based typ=2 is unreliable on a rank-deficient design; compare with the
    # definition instead: SS(term) = RSS(all terms not containing it) - RSS(the same plus the term)
    sst = ((df.y - df.y.mean()) ** 2).sum()
    full = "C(fa)+C(fb)+C(fc)+C(fa):C(fb)+C(fa):C(fc)+C(fb):C(fc)"
    ss_fa = ols_rss(df, "C(fb)+C(fc)+C(fb):C(fc)") - ols_rss(df, "C(fa)+C(fb)+C(fc)+C(fb):C(fc)")
    ss_fb = ols_rss(df, "C(fa)+C(fc)+C(fa):C(fc)") - ols_rss(df, "C(fa)+C(fb)+C(fc)+C(fa):C(fc)")
    ss_fafb = ols_rss(df, "C(fa)+C(fb)+C(fc)+C(fa):C(fc)+C(fb):C(fc)") - ols_rss(df, full)
    assert t.loc["fa", "eta2"] == pytest.approx(ss_fa / sst, abs=1e-9)
    assert t.loc["fb", "eta2"] == pytest.approx(ss_fb / sst, abs=1e-9)
    assert t.loc["fa:fb", "eta2"] == pytest.approx(ss_fafb / sst, abs=1e-9)
    assert t.loc["residual", "eta2"] == pytest.approx(ols_rss(df, full) / sst, abs=1e-9)


def test_factor_types_and_varying_factors():
    df = balanced3(reps=2)
    df["flag"] = df.fc == "y"         # bool factor, same partition as fc
    df["const"] = "same"
    assert varying_factors(df, ["fa", "const", "flag"]) == ["fa", "flag"]
    r1 = attribute(df, "y", ["fa", "fb", "flag"], noise_floor_permutations=0)
    r2 = attribute(df, "y", ["fa", "fb", "fc"], noise_floor_permutations=0)
    np.testing.assert_allclose(r1.table[COLUMNS[1:]].to_numpy(), r2.table[COLUMNS[1:]].to_numpy(), equal_nan=True)
    assert r1.details["levels"]["flag"] == [False, True]


# --------------------------------------------------------------------------------------------------
# Binomial
# --------------------------------------------------------------------------------------------------


def binary_df(n=2500, seed=5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"fa": rng.integers(0, 2, n), "fb": rng.integers(0, 3, n), "fc": rng.integers(0, 2, n)})
    eta = -0.3 + 1.0 * df.fa + 0.5 * (df.fb == 2) - 0.8 * df.fa * df.fc
    df["y"] = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    return df


def glm_deviance(df, formula):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return smf.glm(formula, data=df, family=sm.families.Binomial()).fit().deviance


def test_binomial_matches_statsmodels_glm():
    df = binary_df()
    res = attribute(df, "y", FACTORS3, family="binomial", noise_floor_permutations=0)
    t = by_effect(res)
    null = glm_deviance(df, "y ~ 1")
    sat = glm_deviance(df, "y ~ C(fa)*C(fb)*C(fc)")
    assert res.details["v_all"] == pytest.approx(1 - sat / null, abs=1e-9)  # McFadden R^2 (0/1 data)
    assert res.details["v"]["fa:fb"] == pytest.approx(1 - glm_deviance(df, "y ~ C(fa)*C(fb)") / null, abs=1e-9)
    assert t.loc[FACTORS3, "shapley"].sum() == pytest.approx(res.details["v_all"], abs=1e-12)
    full = "C(fa)+C(fb)+C(fc)+C(fa):C(fb)+C(fa):C(fc)+C(fb):C(fc)"
    lr_fa = glm_deviance(df, "y ~ C(fb)+C(fc)+C(fb):C(fc)") - glm_deviance(df, "y ~ C(fa)+C(fb)+C(fc)+C(fb):C(fc)")
    lr_fafc = glm_deviance(df, "y ~ C(fa)+C(fb)+C(fc)+C(fa):C(fb)+C(fb):C(fc)") - glm_deviance(df, "y ~ " + full)
    assert t.loc["fa", "eta2"] == pytest.approx(lr_fa / null, abs=1e-8)
    assert t.loc["fa:fc", "eta2"] == pytest.approx(lr_fafc / null, abs=1e-8)
    assert t.loc["residual", "eta2"] == pytest.approx(glm_deviance(df, "y ~ " + full) / null, abs=1e-8)
    assert t.loc["fa", "shapley"] > t.loc["fc", "shapley"] > 0


def test_binomial_fraction_outcomes_and_range_check():
    df = binary_df(n=600, seed=2)
    agg = df.assign(g=np.arange(len(df)) // 3).groupby(["g", "fa", "fb", "fc"], as_index=False)["y"].mean()
    res = attribute(agg, "y", FACTORS3, family="binomial", noise_floor_permutations=0)
    assert 0 < res.details["v_all"] < 1
    assert by_effect(res).loc[FACTORS3, "shapley"].sum() == pytest.approx(res.details["v_all"])
    bad = df.assign(y=df.y * 2.0)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        attribute(bad, "y", FACTORS3, family="binomial")


# --------------------------------------------------------------------------------------------------
# Bootstrap and noise floor
# --------------------------------------------------------------------------------------------------


def crossed_items(seed, n_items=80, reps=3, delta=1.0, tau=1.0, sigma=1.0) -> pd.DataFrame:
    """y = delta*(A - 1/2) + item effect + noise; items crossed with A and B (3 levels); B has no effect."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0, tau, n_items)
    a = np.repeat([0, 1], n_items * reps)
    item = np.tile(np.repeat(np.arange(n_items), reps), 2)
    b = np.tile(np.arange(reps), 2 * n_items) % 3
    y = delta * (a - 0.5) + u[item] + rng.normal(0, sigma, len(a))
    return pd.DataFrame({"A": a, "B": b, "item": item, "y": y})


def test_bootstrap_is_deterministic_and_covers_the_truth():
    truth = 0.25 / (0.25 + 1 + 1)  # V_A / (V_A + tau^2 + sigma^2)
    df = crossed_items(0)
    r1 = attribute(df, "y", ["A", "B"], item="item", bootstrap=150, seed=3, noise_floor_permutations=0)
    r2 = attribute(df, "y", ["A", "B"], item="item", bootstrap=150, seed=3, noise_floor_permutations=0)
    r3 = attribute(df, "y", ["A", "B"], item="item", bootstrap=150, seed=4, noise_floor_permutations=0)
    pd.testing.assert_frame_equal(r1.table, r2.table)
    assert not np.allclose(r1.table.ci_low.iloc[:2], r3.table.ci_low.iloc[:2])
    assert r1.details["bootstrap"]["unit"] == "item" and r1.details["bootstrap"]["n_strata"] == 1
    covered = 0
    n_sets = 40
    for s in range(n_sets):
        t = attribute(crossed_items(100 + s), "y", ["A", "B"], item="item", bootstrap=150, seed=s,
                      noise_floor_permutations=0).table
        lo, hi = t.ci_low.iloc[0], t.ci_high.iloc[0]
        assert lo <= t.shapley.iloc[0] <= hi
        covered += lo <= truth <= hi
    assert covered / n_sets >= 0.8  # nominal 0.95; percentile intervals run ~0.9 at this size


def test_bootstrap_strata_follow_nested_items():
    rng = np.random.default_rng(1)
    rows = []
    for task in range(3):  # items nested in task, crossed with quant
        for it in range(20):
            for q in range(2):
                rows += [(task, f"t{task}-{it}", q, rng.normal(task * 0.5 + q * 0.3)) for _ in range(2)]
    df = pd.DataFrame(rows, columns=["task", "item", "quant", "y"])
    res = attribute(df, "y", ["task", "quant"], item="item", bootstrap=50, seed=0, noise_floor_permutations=20)
    b = res.details["bootstrap"]
    assert b["strata_from_factors"] == ["task"] and b["n_strata"] == 3 and b["n_units"] == 60
    nf = res.details["noise_floor"]["factors"]
    assert nf["task"]["permutation"] == "between units (whole units)"  # items nested in task: whole items move
    assert nf["quant"]["permutation"] == "within items"
    # composite item key: (task, index within task)
    df2 = df.assign(idx=df.item.str.split("-").str[1])
    res2 = attribute(df2, "y", ["task", "quant"], item=["task", "idx"], bootstrap=50, seed=0,
                     noise_floor_permutations=20)
    pd.testing.assert_frame_equal(res.table, res2.table)


def test_noise_floor_null_factor_small_real_factor_above():
    null_above, n_sets = 0, 20
    for s in range(n_sets):
        res = attribute(crossed_items(200 + s, n_items=60), "y", ["A", "B"], item="item",
                        noise_floor_permutations=100, seed=s)
        t = by_effect(res)
        nf = res.details["noise_floor"]["factors"]
        assert t.loc["B", "noise_floor"] < 0.03  # 360 rows: a null factor gets about 0.005
        assert t.loc["A", "shapley"] > 5 * t.loc["A", "noise_floor"]
        assert nf["A"]["above_noise"] and nf["A"]["p_value"] < 0.02
        null_above += nf["B"]["above_noise"]
    assert null_above / n_sets <= 0.2  # nominal 0.05
    assert np.isnan(t.loc["residual", "noise_floor"]) and np.isnan(t.loc["A:B", "noise_floor"])
    assert nf["B"]["permutation"] == "within items"


# --------------------------------------------------------------------------------------------------
# Validation and CLI
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(response="nope"), "'nope' not found"),
        (dict(factors=["fa", "const"]), "one level"),
        (dict(response="label"), "numeric"),
        (dict(family="poisson"), "unknown family"),
        (dict(factors=["fa", "fa"]), "listed twice"),
        (dict(factors=[]), "at least one factor"),
        (dict(bootstrap=-1), "bootstrap"),
    ],
)
def test_api_validation(kwargs, match):
    df = balanced3(reps=2).assign(const=1, label="x")
    args = dict(df=df, response="y", factors=FACTORS3) | kwargs
    with pytest.raises(UserError, match=match):
        attribute(**args)


def test_missing_values_are_errors():
    df = balanced3(reps=2)
    with pytest.raises(UserError, match="missing"):
        attribute(df.assign(y=df.y.where(df.index != 3)), "y", FACTORS3)
    with pytest.raises(UserError, match="missing"):
        attribute(df.assign(fb=df.fb.astype(float).where(df.index != 3)), "y", FACTORS3)


@pytest.fixture
def table_files(tmp_path):
    df = crossed_items(5, n_items=30)
    df["A"] = df.A.map({0: "q4_0", 1: "source"})
    csv, pq = tmp_path / "samples.csv", tmp_path / "samples.parquet"
    df.to_csv(csv, index=False)
    df.to_parquet(pq, index=False)
    return df, csv, pq


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_cli_end_to_end(table_files, tmp_path, capsys, fmt):
    df, csv, pq = table_files
    out = tmp_path / f"out-{fmt}"
    rc = cli_main(["attribute", str(csv if fmt == "csv" else pq), "--response", "y", "--factors", "A,B",
                   "--item", "item", "--bootstrap", "40", "--seed", "7", "--noise-permutations", "20",
                   "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    shares = pd.read_csv(out / "variance_shares.csv")
    assert list(shares.columns) == COLUMNS
    assert list(shares.effect) == ["A", "B", "A:B", "residual"]
    doc = json.loads((out / "variance_shares.json").read_text())
    assert [e["effect"] for e in doc["effects"]] == list(shares.effect)
    assert doc["family"] == "gaussian" and doc["seed"] == 7 and doc["bootstrap"]["replicates"] == 40
    assert doc["n_rows"] == len(df) and doc["balanced"] is True
    assert doc["effects"][2]["shapley"] is None  # interaction rows: no Shapley (JSON null, CSV empty)
    api = attribute(df, "y", ["A", "B"], item="item", bootstrap=40, seed=7, noise_floor_permutations=20)
    np.testing.assert_allclose(shares[COLUMNS[1:]].to_numpy(float), api.table[COLUMNS[1:]].to_numpy(float),
                               rtol=1e-8, equal_nan=True)
    assert sorted(p.name for p in out.iterdir()) == ["variance_shares.csv", "variance_shares.json"]


def test_cli_binomial(tmp_path):
    df = binary_df(n=400)
    path = tmp_path / "b.csv"
    df.to_csv(path, index=False)
    rc = cli_main(["attribute", str(path), "--response", "y", "--factors", "fa,fb,fc", "--family", "binomial",
                   "--bootstrap", "20", "--noise-permutations", "10", "--out", str(tmp_path / "o")])
    assert rc == 0
    assert json.loads((tmp_path / "o" / "variance_shares.json").read_text())["family"] == "binomial"


@pytest.mark.parametrize(
    "change, match",
    [
        ({"--response": "missing_col"}, "missing_col"),
        ({"--factors": "A,const"}, "one level"),
        ({"--response": "label"}, "numeric"),
        ({"--family": "poisson"}, "unknown family"),
        ({"input": "corrupt.parquet"}, "cannot read"),
        ({"input": "absent.csv"}, "file not found"),
        ({"input": "table.txt"}, "expected .parquet, .csv or .tsv"),
        ({"--factors": "A,,B"}, "comma-separated"),
        ({"--bootstrap": "many"}, "whole number"),
    ],
)
def test_cli_bad_input_exit_2_one_line_no_output(tmp_path, capsys, change, match):
    df = crossed_items(5, n_items=10).assign(const="k", label="text")
    good = tmp_path / "good.csv"
    df.to_csv(good, index=False)
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp_path / "table.txt").write_text("a,b\n1,2\n")
    out = tmp_path / "out"
    opts = {"input": str(good), "--response": "y", "--factors": "A,B", "--bootstrap": "10", "--out": str(out)}
    opts.update({k: (str(tmp_path / v) if k == "input" else v) for k, v in change.items()})
    argv = ["attribute", opts.pop("input")] + [x for kv in opts.items() for x in kv]
    rc = cli_main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert match in err
    assert not out.exists()


def test_read_table_reads_only_needed_columns(table_files):
    _, csv, pq = table_files
    assert list(read_table(pq, ["y", "A"]).columns) == ["y", "A"]
    assert sorted(read_table(csv, ["A", "y"]).columns) == ["A", "y"]
    with pytest.raises(UserError, match="'zzz' not found"):
        read_table(csv, ["zzz"])


# --------------------------------------------------------------------------------------------------
# No silent misreads: aliased factors, text levels, error lines that name the file
# --------------------------------------------------------------------------------------------------


def aliased_table(seed: int = 0, n_items: int = 30) -> pd.DataFrame:
    """Context length in tokens and the same length written "1k"/"2k"/"4k": one factor under two names.
    y = 0.5 * (tokens == 4096) + 0.3 * quant + item effect + noise."""
    df = crossed_items(seed, n_items=n_items, reps=3).rename(columns={"A": "quant"})
    df["tokens"] = df.B.map({0: 1024, 1: 2048, 2: 4096})
    df["label"] = df.B.map({0: "1k", 1: "2k", 2: "4k"})
    df["y"] = df.y + 0.5 * (df.tokens == 4096)
    return df.drop(columns="B")


def test_aliased_factors_are_merged_with_the_shares_of_one_factor():
    df = aliased_table()
    merged = attribute(df, "y", ["tokens", "quant", "label"], item="item", bootstrap=60, seed=1,
                       noise_floor_permutations=40)
    single = attribute(df, "y", ["tokens", "quant"], item="item", bootstrap=60, seed=1, noise_floor_permutations=40)
    # known answer: exactly the decomposition with one copy of the factor, under the merged name
    assert list(merged.table.effect) == ["tokens+label", "quant", "tokens+label:quant", "residual"]
    assert list(single.table.effect) == ["tokens", "quant", "tokens:quant", "residual"]
    np.testing.assert_allclose(merged.table[COLUMNS[1:]].to_numpy(float), single.table[COLUMNS[1:]].to_numpy(float),
                               rtol=1e-12, atol=1e-15, equal_nan=True)
    assert merged.details["aliased"] == {"tokens+label": ["tokens", "label"]}
    assert "aliased" in merged.details["method"] and "aliased" not in single.details
    assert merged.details["levels"]["tokens+label"] == [[1024, "1k"], [2048, "2k"], [4096, "4k"]]
    # never called noise: the merged factor holds what both explain together, above its noise floor
    row = by_effect(merged).loc["tokens+label"]
    assert row.shapley > 0.02 and row.shapley > row.noise_floor
    assert merged.details["noise_floor"]["factors"]["tokens+label"]["above_noise"] is True


def test_three_aliased_names_merge_and_confounded_but_not_aliased_factors_do_not():
    df = aliased_table(1).assign(kib=lambda t: t.tokens // 1024)
    res = attribute(df, "y", ["label", "quant", "kib", "tokens"], item="item", noise_floor_permutations=0)
    assert res.details["aliased"] == {"label+kib+tokens": ["label", "kib", "tokens"]}
    assert list(res.table.effect)[:2] == ["label+kib+tokens", "quant"]
    # nested, not aliased: 'short' takes one value for 1k and 2k (a function of tokens, not a relabelling)
    df["short"] = df.tokens < 4096
    res = attribute(df, "y", ["tokens", "short", "quant"], item="item", noise_floor_permutations=0)
    assert "aliased" not in res.details and list(res.table.effect)[:3] == ["tokens", "short", "quant"]


def test_cli_announces_aliased_factors(tmp_path, capsys):
    path = tmp_path / "t.csv"
    aliased_table().to_csv(path, index=False)
    out = tmp_path / "o"
    rc = cli_main(["attribute", str(path), "--response", "y", "--factors", "tokens,label,quant", "--item", "item",
                   "--bootstrap", "20", "--noise-permutations", "10", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"note: INPUT {path}: tokens, label: aliased" in printed and "one factor tokens+label" in printed
    assert list(pd.read_csv(out / "variance_shares.csv").effect)[:2] == ["tokens+label", "quant"]
    doc = json.loads((out / "variance_shares.json").read_text())
    assert doc["aliased"] == {"tokens+label": ["tokens", "label"]}
    assert doc["levels"]["tokens+label"] == [["1024", "1k"], ["2048", "2k"], ["4096", "4k"]]  # factors read as text


def test_cli_levels_spelled_none_na_null_stay_levels(tmp_path, capsys):
    df = crossed_items(2, n_items=12)
    df["A"] = df.A.map({0: "None", 1: "NA"})
    df["B"] = df.B.map({0: "null", 1: "nan", 2: "N/A"})
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    rc = cli_main(["attribute", str(path), "--response", "y", "--factors", "A,B", "--item", "item",
                   "--bootstrap", "0", "--noise-permutations", "0", "--out", str(tmp_path / "o")])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "o" / "variance_shares.json").read_text())
    assert doc["levels"] == {"A": ["NA", "None"], "B": ["N/A", "nan", "null"]} and doc["n_rows"] == len(df)


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.assign(y=t.y.astype(object).where(t.index != 4, "inf")), "y: response has 1 missing or infinite"),
    (lambda t: t.assign(y=t.y.where(t.index != 4)), "y: response has 1 missing or infinite"),
    (lambda t: t.assign(A=t.A.astype(object).where(t.index != 7, "")), "A: factor column has 1 missing values"),
    (lambda t: t.assign(item=t["item"].astype(object).where(t.index != 7, "")), "item: item column has 1 missing"),
])
def test_cli_error_lines_name_the_file_and_the_column(tmp_path, capsys, edit, needle):
    path = tmp_path / "t.csv"
    edit(crossed_items(3, n_items=10)).to_csv(path, index=False)
    rc = cli_main(["attribute", str(path), "--response", "y", "--factors", "A,B", "--item", "item",
                   "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: INPUT {path}: {needle}"), err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------------
# Calibrated shares and the noise floor's level
# --------------------------------------------------------------------------------------------------


def test_calibrated_share_targets_the_population_share():
    """y = delta (A - 1/2) + item + noise, B null: the population share of A is V_A / (V_A + tau^2 + sigma^2).
    shapley is biased up by the noise of the cell means; shapley_adj is not, and its interval covers."""
    truth = 0.25 / (0.25 + 1 + 1)
    n_sets = 80
    shap, adj, cover, null_adj = [], [], 0, []
    for s in range(n_sets):
        res = attribute(crossed_items(500 + s, n_items=30, reps=3), "y", ["A", "B"], item="item", bootstrap=100,
                        seed=s, noise_floor_permutations=0)
        t = by_effect(res)
        shap.append(t.loc["A", "shapley"])
        adj.append(t.loc["A", "shapley_adj"])
        null_adj.append(t.loc["B", "shapley_adj"])
        cover += t.loc["A", "adj_ci_low"] <= truth <= t.loc["A", "adj_ci_high"]
        assert t.loc["A", "adj_ci_low"] < t.loc["A", "shapley_adj"] < t.loc["A", "adj_ci_high"]
        assert t[["shapley_adj", "adj_ci_low", "adj_ci_high"]].loc["A:B"].isna().all()
    se = np.std(adj) / np.sqrt(n_sets)
    assert abs(np.mean(adj) - truth) < 3 * se
    assert np.mean(shap) - truth > abs(np.mean(adj) - truth)
    assert abs(np.mean(null_adj)) < 3 * np.std(null_adj) / np.sqrt(n_sets)  # the null factor's share: 0
    assert cover / n_sets >= 0.88  # 95% nominal; measured 0.93-0.96 in benchmarks/bench_coverage.py
    cal = res.details["bootstrap"]["calibrated"]
    assert "infinitely many items" in cal["population"] and set(cal["se"]) == {"A", "B", "residual"}


def test_shares_without_bootstrap_have_no_calibrated_columns():
    t = by_effect(attribute(crossed_items(1), "y", ["A", "B"], item="item", noise_floor_permutations=0))
    assert t[["shapley_adj", "adj_ci_low", "adj_ci_high", "sobol_total_adj"]].isna().all().all()


def test_noise_floor_is_a_rank_exact_threshold():
    from reprogrid.attribution.noise import rank_floor

    null = np.random.default_rng(0).permutation(np.arange(1.0, 101.0))
    assert rank_floor(null) == 96.0  # ceil(0.95 * 101) = 96th smallest: P(null share > floor) = 5/101
    assert rank_floor(np.arange(1.0, 11.0)) == 10.0  # too few permutations: the largest


def test_noise_floor_for_a_factor_that_nests_the_items():
    """A null factor with half of the items at each level (items crossed with A): whole items are
    relabelled, so the floor keeps the item effects; shuffling entries cell by cell let 33% through."""
    above = 0
    n_sets = 40
    for s in range(n_sets):
        df = crossed_items(900 + s, n_items=40, reps=1, delta=1.0, tau=1.0, sigma=0.5)
        df["D"] = (df["item"] >= 20).astype(int)
        res = attribute(df, "y", ["A", "D"], item="item", noise_floor_permutations=60, seed=s)
        nf = res.details["noise_floor"]["factors"]["D"]
        assert nf["permutation"] == "between units (whole units)"
        above += nf["above_noise"]
    assert above / n_sets <= 0.15  # nominal 0.05; 0.048 over 600 data sets in bench_coverage.py
