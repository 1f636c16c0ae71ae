"""Fractional designs (reprogrid.designs) and the analysis of incomplete grids (reprogrid estimate): known answers."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, run_main
from reprogrid import designs, grid
from reprogrid.attribution import attribute
from reprogrid.attribution.incomplete import estimate
from reprogrid.config import load_config
from reprogrid.errors import UserError

TINY = REPO / "tests" / "configs" / "tiny.yaml"
GPU = REPO / "configs" / "studies" / "qwen25_ruler_pair_gpu.yaml"
GPU_FRACTIONAL = REPO / "configs" / "studies" / "qwen25_ruler_pair_gpu_fractional.yaml"
TWO = {"chat_template": [False, True], "answer_prefix": ["kept", "dropped"], "dtype": ["float32", "bfloat16"],
       "attn_implementation": ["eager", "sdpa"], "length_budget": ["fit", "truncate"], "batch_size": [1, 2]}


def write(tmp_path, raw: dict, name: str = "study.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


def tiny_raw() -> dict:
    """The tiny study without its claims and pitfall sections (they name files and levels of its own grid)."""
    raw = yaml.safe_load(TINY.read_text())
    raw.pop("claims", None)
    raw.pop("pitfalls", None)
    return raw


def synthetic(tmp_path, factors: dict, design: dict | None = None, name: str = "s.yaml"):
    raw = tiny_raw()
    raw["factors"] = {"model": raw["factors"]["model"], **factors, "metric": ["all_match", "exact_match"]}
    if design is not None:
        raw["design"] = design
    return load_config(write(tmp_path, raw, name))


# --- the grid --------------------------------------------------------------------------------------

def test_full_design_gives_the_same_cells_and_ids(tmp_path):
    raw = yaml.safe_load(TINY.read_text())
    raw["design"] = {"type": "full"}
    a, b = load_config(TINY), load_config(write(tmp_path, raw))
    assert grid.to_tsv(grid.expand(a)) == grid.to_tsv(grid.expand(b))
    assert grid.generations(a) == grid.generations(b)
    assert grid.design_plan(a) is None and grid.design_plan(b) is None


def test_gpu_fractional_study_runs_a_third_of_the_full_ids_and_states_the_aliases(tmp_path, monkeypatch):
    full = grid.expand(load_config(GPU))
    frac = grid.expand(load_config(GPU_FRACTIONAL))
    ids_full, ids_frac = set(full["generation_id"]), set(frac["generation_id"])
    assert ids_frac < ids_full and len(ids_frac) * 3 <= len(ids_full)
    # scoring factors stay fully crossed: every run has every (metric, split)
    assert (frac.groupby("generation_id").size() == 4).all()
    out = tmp_path / "aliases.json"
    monkeypatch.chdir(REPO)
    res = run_main("grid", "--config", str(GPU_FRACTIONAL), "--aliases", str(out))
    assert res.returncode == 0, res.stderr
    assert len(set(line.split("\t")[-1] for line in res.stdout.splitlines()[1:])) == len(ids_frac)
    assert f"{len(ids_frac)} of {len(ids_full)} generation runs" in res.stderr
    assert "estimable: model, context_length, chat_template" in res.stderr
    assert "partly estimable, not fitted: model:context_length" in res.stderr
    struct = json.loads(out.read_text())
    assert struct["runs"] == 24 and struct["full_runs"] == 72 and struct["family"] == "generalized subset design"


def test_resolution_v_holds_every_main_effect_and_two_way_interaction(tmp_path):
    cfg = synthetic(tmp_path, dict(itertools.islice(TWO.items(), 5)), {"type": "fractional", "resolution": "V"})
    plan = grid.design_plan(cfg)
    assert plan.n_runs == 16 and plan.n_full == 32
    s = designs.alias_structure(plan)
    assert len(s["estimable"]) == 5 + 10 and s["aliased"] == [] and s["generators"]
    cells = grid.expand(cfg)
    assert cells["generation_id"].nunique() == 16 and len(cells) == 32
    # every pair of factors sees every pair of levels equally often (a balanced fraction)
    runs = cells.drop_duplicates("generation_id")
    for a, b in itertools.combinations(list(TWO)[:5], 2):
        assert runs.groupby([a, b]).size().tolist() == [4, 4, 4, 4]


def test_resolution_iv_names_the_aliased_interactions(tmp_path):
    four = dict(itertools.islice(TWO.items(), 4))
    cfg = synthetic(tmp_path, four, {"type": "fractional", "resolution": "IV"})
    s = designs.alias_structure(grid.design_plan(cfg))
    assert s["runs"] == 8
    assert sorted(s["aliased"]) == sorted([
        "chat_template:answer_prefix = dtype:attn_implementation",
        "chat_template:dtype = answer_prefix:attn_implementation",
        "chat_template:attn_implementation = answer_prefix:dtype"])
    assert any("chat_template = answer_prefix:dtype:attn_implementation" in c for c in s["chains"])


def test_designs_are_seeded_and_deterministic(tmp_path):
    five = dict(itertools.islice(TWO.items(), 5))
    ids = []
    for seed in (1, 1, 2, 3):
        cfg = synthetic(tmp_path, five, {"type": "fractional", "resolution": "III", "seed": seed}, f"s{len(ids)}.yaml")
        ids.append(tuple(sorted(set(grid.expand(cfg)["generation_id"]))))
    assert ids[0] == ids[1] and len({len(x) for x in ids}) == 1 and len(set(ids)) > 1


BAD = [
    ({"type": "fractional", "resolution": "IV"}, {"chat_template": [False, True], "dtype": ["float32", "bfloat16"],
                                                   "batch_size": [1, 2]}, "design.resolution",
     "no fraction of 3 two-level factors reaches resolution IV"),
    ({"type": "fractional", "resolution": "III"}, {"chat_template": [False, True], "context_length": [512, 1024, 2048]},
     "design.resolution", "holds two-level factors only, and context_length (3 levels) has more"),
    ({"type": "fractional", "resolution": "V", "budget": 8}, dict(itertools.islice(TWO.items(), 5)), "design.budget",
     "needs 16 generation runs, more than the budget of 8"),
    ({"type": "fractional", "reduction": 12}, {"chat_template": [False, True], "context_length": [512, 1024, 2048]},
     "design.reduction", "leaves less than one run"),
    ({"type": "fractional"}, dict(itertools.islice(TWO.items(), 3)), "design", "either `resolution`"),
    ({"type": "fractional", "resolution": "III", "reduction": 2}, dict(itertools.islice(TWO.items(), 3)), "design",
     "one of them"),
    ({"type": "full", "resolution": "V"}, dict(itertools.islice(TWO.items(), 3)), "design.resolution",
     "belongs to a fractional design"),
    ({"type": "fractional", "resolution": "III"}, {"chat_template": [False, True]}, "design.type",
     "at least two generation factors"),
    ({"type": "fractional", "resolution": "VI"}, dict(itertools.islice(TWO.items(), 3)), "design.resolution", "VI"),
    ({"type": "fractional", "runs": 3}, dict(itertools.islice(TWO.items(), 3)), "design", "runs"),
]


@pytest.mark.parametrize("design,factors,field,text", BAD)
def test_bad_designs_are_one_line_errors_before_any_work(tmp_path, design, factors, field, text):
    raw = tiny_raw()
    raw["factors"] = {"model": raw["factors"]["model"], **factors}
    raw["design"] = design
    path = write(tmp_path, raw)
    with pytest.raises(UserError) as e:
        grid.expand(load_config(path))
    assert field in str(e.value) and text in str(e.value)
    res = run_main("grid", "--config", str(path))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith(f"error: {path}: ") and len(res.stderr.strip().splitlines()) == 1


# --- the analysis of an incomplete grid -------------------------------------------------------------

MAIN = np.array([0.8, 0.5, 0.3, 0.2, 0.0, 0.0])
INTER = {(0, 1): 0.3, (2, 3): 0.2}


def true_mean(codes: np.ndarray) -> np.ndarray:
    x = 2.0 * codes - 1
    return x @ MAIN + sum(a * x[:, i] * x[:, j] for (i, j), a in INTER.items())


def rows_of(codes: np.ndarray, n: int, sigma: float, rng) -> pd.DataFrame:
    names = [f"f{j}" for j in range(codes.shape[1])]
    rep = np.repeat(codes, n, axis=0)
    df = pd.DataFrame(rep, columns=names)
    df["y"] = np.repeat(true_mean(codes), n) + rng.normal(0, sigma, len(rep))
    return df


def half_fraction() -> np.ndarray:
    """2^(6-1), resolution VI: f5 = f0 f1 f2 f3 f4 (sum of codes even)."""
    full = np.array(list(itertools.product([0, 1], repeat=6)))
    return full[full.sum(axis=1) % 2 == 0]


def test_estimate_recovers_the_full_grid_from_a_resolution_vi_half():
    rng = np.random.default_rng(3)
    full = np.array(list(itertools.product([0, 1], repeat=6)))
    names = [f"f{j}" for j in range(6)]
    rows = rows_of(full, 20, 0.05, rng)
    keep = rows[names].to_numpy().sum(axis=1) % 2 == 0
    res = estimate(rows[keep], "y", names, draws=100, noise_draws=50, seed=1)
    ref = attribute(rows, "y", names).table.set_index("effect")
    got = res.table.set_index("effect")
    assert list(res.table.columns) == ["effect", *ref.columns]
    for f in names:
        assert abs(got.loc[f, "shapley"] - ref.loc[f, "shapley"]) < 0.01
        assert got.loc[f, "ci_low"] <= got.loc[f, "shapley"] <= got.loc[f, "ci_high"]
    assert got.loc["f0", "shapley"] > got.loc["f1", "shapley"] > got.loc["f2", "shapley"] > got.loc["f3", "shapley"]
    for f in names:
        assert abs(got.loc[f, "shapley_adj"] - ref.loc[f, "shapley"]) < 0.01
        assert got.loc[f, "adj_ci_low"] <= got.loc[f, "shapley_adj"] <= got.loc[f, "adj_ci_high"]
    for f in ("f0", "f1", "f2", "f3"):
        assert got.loc[f, "shapley_adj"] > got.loc[f, "noise_floor"]
    pred = res.predicted
    assert len(pred) == 64 and (pred["status"] == "predicted").sum() == 32 and pred["estimable"].all()
    codes = pred[names].to_numpy().astype(int)
    assert np.abs(pred["predicted"] - true_mean(codes)).max() < 0.05
    ho = res.details["holdout"]
    assert ho["cells"] == 32 and 0.8 <= ho["coverage"] <= 1.0 and ho["rmse"] < 0.05
    assert set(res.holdout.columns) >= {"measured", "predicted", "pi_low", "pi_high", "covered", *names}


def test_prediction_intervals_cover_the_true_means_at_their_nominal_rate():
    rng = np.random.default_rng(11)
    full = np.array(list(itertools.product([0, 1], repeat=6)))
    names = [f"f{j}" for j in range(6)]
    hits, total, ho_cov = 0, 0, []
    for rep in range(20):
        rows = rows_of(half_fraction(), 5, 1.0, rng)
        res = estimate(rows, "y", names, draws=0, noise_draws=0, seed=rep)
        pred = res.predicted[res.predicted["status"] == "predicted"]
        mu = true_mean(pred[names].to_numpy().astype(int))
        hits += int(((pred["ci_low"] <= mu) & (mu <= pred["ci_high"])).sum())
        total += len(pred)
        ho_cov.append(res.details["holdout"]["coverage"])
    assert total == 20 * 32
    assert 0.90 <= hits / total <= 0.99
    assert 0.88 <= np.mean(ho_cov) <= 1.0


def test_aliased_effects_are_named_not_split():
    # 2^(3-1) resolution III: f2 = f0 f1, so every main effect is aliased with the other two's interaction
    codes = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 1, 1]])
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(np.repeat(codes, 10, axis=0), columns=["f0", "f1", "f2"])
    rows["y"] = rows["f0"] * 1.0 + rows["f2"] * 0.5 + rng.normal(0, 0.1, len(rows))
    res = estimate(rows, "y", ["f0", "f1", "f2"], draws=20, noise_draws=10)
    effects = list(res.table["effect"])
    assert {"f0 = f1:f2", "f1 = f0:f2", "f2 = f0:f1", "residual"} == set(effects)
    assert sorted(res.details["aliased"]) == ["f0 = f1:f2", "f1 = f0:f2", "f2 = f0:f1"]
    assert not res.predicted.loc[res.predicted["status"] == "predicted", "estimable"].any()


def test_binomial_estimate_runs_a_glm():
    rng = np.random.default_rng(5)
    names = [f"f{j}" for j in range(6)]
    frac = half_fraction()
    eta = 1.5 * (2 * frac[:, 0] - 1) + 0.8 * (2 * frac[:, 1] - 1)
    rep = np.repeat(frac, 40, axis=0)
    rows = pd.DataFrame(rep, columns=names)
    rows["y"] = (rng.random(len(rep)) < np.repeat(1 / (1 + np.exp(-eta)), 40)).astype(float)
    res = estimate(rows, "y", names, family="binomial", draws=50, noise_draws=20)
    got = res.table.set_index("effect")["shapley"]
    assert got["f0"] > got["f1"] > max(got[f] for f in names[2:])
    p = res.predicted["predicted"]
    assert ((p > 0) & (p < 1)).all() and "GLM" in res.details["method"]["model"]


def test_estimate_cli_writes_its_four_files(tmp_path):
    rng = np.random.default_rng(2)
    rows = rows_of(half_fraction(), 4, 0.5, rng)
    rows.to_csv(tmp_path / "in.csv", index=False)
    res = run_main("estimate", str(tmp_path / "in.csv"), "--response", "y", "--factors",
                   ",".join(f"f{j}" for j in range(6)), "--draws", "20", "--noise-draws", "10",
                   "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    for name in ("design_shares.csv", "design_shares.json", "predicted_cells.csv", "holdout.csv"):
        assert (tmp_path / "out" / name).is_file()
    assert "held-out check" in res.stdout


# --- adaptive designs -------------------------------------------------------------------------------

@pytest.mark.parametrize("design,text", [
    ({"type": "adaptive", "resolution": "V", "budget": 10}, "the screening fraction needs 16 generation runs, "
                                                            "more than the budget of 10"),
    ({"type": "adaptive", "resolution": "V"}, "an adaptive design needs a `budget`"),
])
def test_bad_adaptive_designs_are_one_line_errors(tmp_path, design, text):
    with pytest.raises(UserError, match="design") as e:
        grid.expand(synthetic(tmp_path, dict(itertools.islice(TWO.items(), 5)), design))
    assert text in str(e.value)


def test_adaptive_rounds_grow_the_grid_up_to_the_budget(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    five = dict(itertools.islice(TWO.items(), 5))
    cfg = synthetic(tmp_path, five, {"type": "adaptive", "resolution": "III", "budget": 16, "follow_up": 4})
    names = [*five, "metric"]
    rng = np.random.default_rng(0)
    seen, messages = [], []
    for _ in range(4):
        cells = grid.expand(load_config(cfg.path))
        seen.append(set(cells["generation_id"]))
        rows = cells.loc[cells.index.repeat(10)].reset_index(drop=True)
        rows["y"] = (rows["chat_template"].astype(str) == "True") * 0.5 + rng.normal(0, 1, len(rows))
        res = estimate(rows, "y", names, draws=10, noise_draws=0)
        out = tmp_path / "results-tiny" / "attribution" / "design"
        out.mkdir(parents=True, exist_ok=True)
        res.predicted.to_csv(out / "predicted_cells.csv", index=False)
        r = run_main("adapt", "--config", str(cfg.path))
        assert r.returncode == 0, r.stderr
        messages.append(r.stdout)
    assert [len(s) for s in seen] == [8, 12, 16, 16]
    assert seen[0] < seen[1] < seen[2]  # each round keeps every earlier run (same ids)
    assert messages[0].startswith("round 1: added 4") and messages[1].startswith("round 2: added 4")
    assert messages[2].startswith("budget reached: 16 of 16")
    rounds = json.loads((tmp_path / "results-tiny" / "grid" / "rounds.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert set(rounds[0]["generation_ids"]) == seen[1] - seen[0]


def test_the_report_shows_the_design_section(tmp_path):
    from report_fixtures import make_results
    from reprogrid.attribution import varying_factors
    from reprogrid.commands.estimate import write_outputs
    from reprogrid.io import read_table
    from reprogrid.layout import Layout
    from reprogrid.report import build_report
    from reprogrid.study import load_study

    cfg_path, results = make_results(tmp_path, with_claims=False, with_specdec=False)
    cfg = load_study(cfg_path)
    L = Layout(results)
    samples = read_table(L.samples)
    factors = varying_factors(samples, cfg.listed)
    half = samples[samples["context_length"].astype(str) != "4096"]  # an incomplete grid
    write_outputs(estimate(half, "score", factors, draws=20, noise_draws=10), L.design_dir)
    cfg.raw["design"] = {"type": "fractional", "reduction": 2}  # the report reads the section of such a study
    paths = build_report(cfg, results, n_boot=20)
    md, html = paths["summary"].read_text(), paths["html"].read_text()
    for text in (md, html):
        assert "Fractional design: model-based shares" in text and "held-out check" in text
        assert "unrun cells predicted with intervals" in text
