"""reprogrid.claims: the registry, consistency checks, mapping to cells and verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from reprogrid.claims import (check_claims, grim_possible, load_claims, map_claims_to_cells, verdicts)
from reprogrid.cli import main
from reprogrid.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "configs" / "claims" / "qwen25_ruler.yaml"
BAD = Path(__file__).parent / "data" / "claims_bad"


def claim(cid, value, scale="percent", **kw):
    return {"id": cid, "source": {"paper": "A paper", "arxiv": "2501.00001"}, "model": kw.pop("model", "qwen2.5-3b"),
            "benchmark": "ruler", "value": value, "scale": scale, "protocol": kw.pop("protocol", {}), **kw}


def write(tmp_path, name, claims) -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump({"claims": claims}, sort_keys=False))
    return p


# ---------------------------------------------------------------------------------------------------
# the shipped registry


def test_shipped_registry_loads_and_states_only_what_was_seen():
    claims = {c.id: c for c in load_claims([SHIPPED])}
    assert set(claims) == {"mtraining_qwen25_3b_ruler", "pbs_attn_qwen25_7b_instruct_1m_ruler",
                           "ruler_readme_qwen25_14b_instruct_1m", "ruler_readme_qwen25_7b_instruct_1m"}
    mt = claims["mtraining_qwen25_3b_ruler"]
    assert mt.model == "qwen2.5-3b" and mt.protocol == {} and mt.fraction == pytest.approx(0.019)
    assert mt.source["arxiv"] == "2510.18830"
    pbs = claims["pbs_attn_qwen25_7b_instruct_1m_ruler"]
    assert pbs.protocol == {"dtype": "bfloat16"} and pbs.source["arxiv"] == "2510.21270"
    r14 = claims["ruler_readme_qwen25_14b_instruct_1m"]
    assert r14.aggregate_over == "context_length"
    assert list(r14.components) == [4096, 8192, 16384, 32768, 65536, 131072]
    assert list(r14.components.values()) == [97.5, 97.1, 94.6, 94.9, 94.9, 92.2]


def test_shipped_registry_check_reports_the_14b_average(capsys):
    findings = check_claims(load_claims([SHIPPED]))
    # first: neither number of the pair was found in the paper it is attributed to
    assert [(f.claim_id, f.kind) for f in findings] == [
        ("mtraining_qwen25_3b_ruler", "not_traceable"), ("pbs_attn_qwen25_7b_instruct_1m_ruler", "not_traceable"),
        ("pbs_attn_qwen25_7b_instruct_1m_ruler", "possible_misattribution"),
        ("ruler_readme_qwen25_14b_instruct_1m", "aggregate_mismatch")]
    # a real finding: 571.2 / 6 = 95.2, not the listed 95.7; the 7B row (551.0 / 6 = 91.83) passes
    agg = findings[3].message
    assert "95.200" in agg and "no standard RULER aggregation reproduces 95.7" in agg
    # the 95.7 attributed to PBS-Attn's 7B model is the README's 14B average: one line naming both ids
    assert "ruler_readme_qwen25_14b_instruct_1m" in findings[2].message
    assert main(["claims", "check", str(SHIPPED)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 4 and "ruler_readme_qwen25_14b_instruct_1m: aggregate_mismatch" in out[3]
    assert out[0].endswith("has no 1.9") and "not_traceable: the pair's low claim (1.9)" in out[0]


# ---------------------------------------------------------------------------------------------------
# checks

PLANTED = [
    claim("clean_grim", 50.0, decimals=1, n_items=40),
    claim("agg_ok", 91.8, decimals=1, aggregate="mean", aggregate_over="context_length",
          components={4096: 96.8, 8192: 95.3, 16384: 93.0, 32768: 91.1, 65536: 90.4, 131072: 84.4}),
    claim("agg_bad", 90.0, aggregate="mean", aggregate_over="context_length", components={4096: 96.0, 8192: 80.0}),
    claim("over_100", 120.0),
    claim("fraction_reads_percent", 95.7, scale="fraction"),
    claim("percent_reads_fraction", 0.957),
    claim("grim_bad", 0.513, scale="fraction", decimals=3, n_items=40),
    claim("grim_bad_percent", 52.4, decimals=1, n_items=40),
    claim("too_precise", 95.75, decimals=1),
]
EXPECTED = [
    ("agg_bad", "aggregate_mismatch"),
    ("over_100", "out_of_scale"),
    ("fraction_reads_percent", "out_of_scale"),
    ("percent_reads_fraction", "fraction_as_percent"),
    ("grim_bad", "grim"),
    ("grim_bad_percent", "grim"),
    ("too_precise", "precision"),
]


def test_planted_inconsistencies_give_exactly_the_expected_findings(tmp_path, capsys):
    path = write(tmp_path, "planted.yaml", PLANTED)
    findings = check_claims(load_claims([path]))
    assert [(f.claim_id, f.kind) for f in findings] == EXPECTED
    by = {f.claim_id: f.message for f in findings}
    assert "88.0" in by["agg_bad"]
    assert "reads as a percentage" in by["fraction_reads_percent"]
    assert "20/40" in by["grim_bad"] and "21/40" in by["grim_bad"]
    assert main(["claims", "check", str(path)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == len(EXPECTED)
    for line, (cid, kind) in zip(out, EXPECTED):
        assert line.startswith(f"{path}: {cid}: {kind}: ")


def test_clean_file_exits_0(tmp_path, capsys):
    path = write(tmp_path, "clean.yaml", [PLANTED[0], PLANTED[1], claim("grim_ok_percent", 52.5, decimals=1, n_items=40)])
    assert main(["claims", "check", str(path)]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("value, n, d, unit, ok", [
    (0.513, 40, 3, 1, False),
    (0.525, 40, 3, 1, True),
    (52.5, 40, 1, 100, True),
    (52.4, 40, 1, 100, False),
    (57.14, 7, 2, 100, True),   # 4/7
    (57.15, 7, 2, 100, False),
    (0.28, 200, 2, 1, True),    # 57/200 = 0.285 lies on the rounding boundary: either convention passes
    (0.29, 200, 2, 1, True),
    (28.5, 200, 1, 100, True),
    (0.0, 13, 3, 1, True),
    (100, 13, 0, 100, True),
    (33.3, 3, 1, 100, True),
    (33.4, 3, 1, 100, False),
])
def test_grim(value, n, d, unit, ok):
    assert grim_possible(value, n, d, unit)[0] is ok


def test_grim_uses_item_denominator(tmp_path):
    # 10 items, each scored in steps of 1/4 (e.g. 4 references): 0.925 = 37/40 is possible
    path = write(tmp_path, "den.yaml", [claim("den", 0.925, scale="fraction", decimals=3, n_items=10,
                                              item_denominator=4),
                                        claim("bin", 0.925, scale="fraction", decimals=3, n_items=10)])
    assert [(f.claim_id, f.kind) for f in check_claims(load_claims([path]))] == [("bin", "grim")]


# ---------------------------------------------------------------------------------------------------
# invalid files: exit 2, one line naming the field

BAD_EXPECTED = {
    "01_missing_id.yaml": "claims[0].id: required",
    "02_duplicate_id.yaml": "claims[1].id: duplicate id 'same'",
    "03_bad_scale.yaml": "claims[0].scale: expected 'percent' or 'fraction', got 'pct'",
    "04_value_not_numeric.yaml": "claims[0].value: expected a number",
    "05_malformed.yaml": "05_malformed.yaml: malformed YAML at line 4, column 5",
    "06_unknown_top_key.yaml": "06_unknown_top_key.yaml: references: unknown top-level key",
    "07_components_not_mapping.yaml": "claims[0].components: expected a mapping",
    "08_negative_n_items.yaml": "claims[0].n_items: expected an integer >= 1, got -40",
    "09_decimals_not_int.yaml": "claims[0].decimals: expected an integer",
    "10_unknown_protocol_factor.yaml": "claims[0].protocol.attention: unknown factor 'attention'",
    "11_claims_not_list.yaml": "11_claims_not_list.yaml: claims: expected a list of claims, got mapping",
    "12_empty.yaml": "12_empty.yaml: the file is empty",
    "13_level_wrong_type.yaml": "claims[0].protocol.context_length: expected an integer, got string '32K'",
    "14_null_level.yaml": "claims[0].protocol.dtype: null is not a level",
    "15_arxiv_as_number.yaml": "claims[0].source.arxiv: expected a non-empty string in quotes",
    "16_aggregate_without_components.yaml": "claims[0].components: an aggregate needs its `components`",
    "17_unknown_claim_key.yaml": "claims[0].valeu: unknown key",
    "18_top_level_list.yaml": "expected a mapping with a 'claims:' list, got list",
    "19_model_in_protocol.yaml": "claims[0].protocol.model: the model is the claim's own `model` field",
    "20_level_not_in_enum.yaml": "claims[0].protocol.metric: expected one of 'all_match'",
    "21_missing_protocol.yaml": "claims[0].protocol: required",
    "22_component_key_type.yaml": "claims[0].components['4K']: expected an integer",
}


def test_bad_corpus_is_fully_covered():
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(BAD_EXPECTED)
    assert len(BAD_EXPECTED) >= 12


@pytest.mark.parametrize("name", sorted(BAD_EXPECTED))
def test_invalid_claims_file_exit_2_one_line(name, capsys):
    rc = main(["claims", "check", str(BAD / name)])
    captured = capsys.readouterr()
    assert rc == 2
    err = captured.err.strip().splitlines()
    assert len(err) == 1, captured.err
    assert err[0].startswith(f"error: {BAD / name}")
    assert BAD_EXPECTED[name] in err[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_duplicate_id_across_files_and_missing_file(tmp_path):
    a = write(tmp_path, "a.yaml", [claim("x", 50.0)])
    b = write(tmp_path, "b.yaml", [claim("x", 60.0)])
    with pytest.raises(UserError, match=r"b.yaml: claims\[0\].id: duplicate id 'x' \(first at .*a.yaml"):
        load_claims([a, b])
    with pytest.raises(UserError, match="file not found"):
        load_claims([tmp_path / "nope.yaml"])


# ---------------------------------------------------------------------------------------------------
# mapping and verdicts on a synthetic grid with known scores

M3, M7 = "qwen2.5-3b", "qwen2.5-7b-instruct-1m"
TRUE_SCORES = {  # (model, context_length, chat_template) -> fraction of 50 binary items
    (M3, 4096, False): 0.60, (M3, 4096, True): 0.70, (M3, 8192, False): 0.02, (M3, 8192, True): 0.10,
    (M7, 4096, False): 0.90, (M7, 4096, True): 0.96, (M7, 8192, False): 0.50, (M7, 8192, True): 0.94,
}
N_ITEMS = 50


@pytest.fixture(scope="module")
def tables():
    cells, samples = [], []
    for i, ((m, L, ct), p) in enumerate(TRUE_SCORES.items()):
        cid = f"c{i}"
        k = round(p * N_ITEMS)
        cells.append({"cell_id": cid, "generation_id": f"g{i}", "model": m, "context_length": L,
                      "chat_template": ct, "score": k / N_ITEMS, "n_items": N_ITEMS, "status": "ok"})
        for j in range(N_ITEMS):
            samples.append({"cell_id": cid, "model": m, "context_length": L, "chat_template": ct,
                            "task": "niah_single_1", "item_id": f"{L}-{j}", "score": float(j < k)})
    # a failed cell is ignored
    cells.append({"cell_id": "cx", "generation_id": "gx", "model": M7, "context_length": 16384,
                  "chat_template": False, "score": np.nan, "n_items": 0, "status": "failed"})
    return pd.DataFrame(cells), pd.DataFrame(samples)


GRID_CLAIMS = [
    claim("low_3b", 2.0, decimals=1),
    claim("high_7b_avg", 95.0, decimals=1, model=M7, aggregate="mean", aggregate_over="context_length",
          components={4096: 96.0, 8192: 94.0}, protocol={"chat_template": True}),
    claim("stated_ctx", 50.0, decimals=1, model=M7, protocol={"context_length": 8192}),
    claim("missing_level", 50.0, model=M7, protocol={"context_length": 131072, "dtype": "bfloat16"}),
    claim("missing_model", 10.0, model="qwen2.5-14b-instruct-1m"),
]


@pytest.fixture(scope="module")
def grid_claims(tmp_path_factory):
    path = write(tmp_path_factory.mktemp("claims"), "grid.yaml", GRID_CLAIMS)
    return path, load_claims([path])


def test_map_claims_to_cells(tables, grid_claims):
    cells, _ = tables
    t = map_claims_to_cells(grid_claims[1], cells, ["model", "context_length", "chat_template"]).set_index("claim_id")
    low = t.loc["low_3b"]
    assert low["n_cells"] == 4 and low["unknown_factors"] == "context_length;chat_template"
    assert low["open_levels"] == "context_length=4096|8192;chat_template=false|true"
    assert (low["grid_min"], low["grid_max"]) == pytest.approx((0.02, 0.70))
    assert low["nearest"] == pytest.approx(0.02) and low["in_range"]
    high = t.loc["high_7b_avg"]
    assert high["aggregated"] and high["n_cells"] == 2 and high["n_profiles"] == 1
    assert high["grid_min"] == pytest.approx(0.95) and high["grid_max"] == pytest.approx(0.95)
    assert high["unknown_factors"] == ""
    ctx = t.loc["stated_ctx"]
    assert ctx["n_cells"] == 2 and (ctx["grid_min"], ctx["grid_max"]) == pytest.approx((0.50, 0.94))
    miss = t.loc["missing_level"]
    assert miss["n_cells"] == 0 and "context_length=131072 is not in the grid" in miss["missing"]
    assert miss["unverified"] == "dtype=bfloat16" and not miss["in_range"]
    assert "model=qwen2.5-14b-instruct-1m is not in the grid" in t.loc["missing_model", "missing"]


def test_map_default_factors_come_from_the_catalogue(tables, grid_claims):
    cells, _ = tables
    t = map_claims_to_cells(grid_claims[1], cells)
    assert t.set_index("claim_id").loc["low_3b", "unknown_factors"] == "context_length;chat_template"


SHARES = pd.DataFrame({"effect": ["model", "context_length", "model:context_length", "residual"],
                       "shapley": [0.5, 0.3, 0.1, 0.1], "ci_low": [0.4, 0.2, 0.05, 0.05],
                       "ci_high": [0.6, 0.35, 0.15, 0.15]})


def test_verdicts_with_samples(tables, grid_claims):
    cells, samples = tables
    v = verdicts(grid_claims[1], cells, samples, variance_shares=SHARES, bootstrap=200, seed=1)
    json.dumps(v)  # JSON-serialisable
    assert v["pair"]["low"]["id"] == "low_3b" and v["pair"]["high"]["id"] == "high_7b_avg"
    top = v["most_explanatory_factor"]
    assert top["effect"] == "model" and top["ci"] == [0.4, 0.6] and top["separated"] is True
    ex = {e["claim"]["id"]: e for e in v["explanations"]}
    assert ex["low_3b"]["status"] == "matched"
    assert ex["low_3b"]["best"]["levels"] == {"context_length": "8192", "chat_template": "false"}
    assert ex["low_3b"]["best"]["score"] == pytest.approx(0.02)
    assert ex["high_7b_avg"]["best"]["score"] == pytest.approx(0.95) and ex["high_7b_avg"]["n_readings"] == 1
    assert ex["stated_ctx"]["best"]["levels"] == {"chat_template": "false"}
    assert ex["missing_level"]["status"] == "no_cells"
    lo, hi = ex["stated_ctx"]["best"]["ci"]
    assert lo < 0.5 < hi
    # the 7B model under low_3b's conditions (nothing stated): 0.50 .. 0.96 over the open factors
    r = v["reproducibility"]
    assert r["model"] == M7 and r["conditions_of"] == "low_3b"
    assert r["range"] == pytest.approx([0.50, 0.96])
    assert r["status"] == "depends_on_unknowns"
    # the pair aggregates differently: no pairwise decomposition, with the reason
    assert v["pairwise"]["available"] is False


def test_verdicts_pairwise_decomposition_and_determinism(tables, grid_claims):
    cells, samples = tables
    v1 = verdicts(grid_claims[1], cells, samples, pair=("low_3b", "stated_ctx"), bootstrap=100, seed=2)
    v2 = verdicts(grid_claims[1], cells, samples, pair=("low_3b", "stated_ctx"), bootstrap=100, seed=2)
    assert v1 == v2
    pw = v1["pairwise"]
    assert pw["available"] and pw["largest"] == "model"
    # best readings: 3B at 8192/no template (0.02) vs 7B at 8192/no template (0.50): only the model differs
    assert [c["factor"] for c in pw["contributions"]] == ["model"]
    assert pw["contributions"][0]["contribution"] == pytest.approx(0.48)
    assert pw["gap"] == pytest.approx(0.48)
    # the step and the gap carry a paired test on shared items (explain.paired)
    gt = pw["gap_test"]
    assert gt["test"] in ("mcnemar_exact", "paired_permutation") and gt["p_value"] < 0.05 and gt["n_pairs"] > 0
    assert gt["mde"] > 0 and pw["contributions"][0]["p_value"] == pytest.approx(gt["p_value"])
    assert v1["most_explanatory_factor"]["available"] is False


def test_verdicts_without_samples_use_normal_approximation(tables, grid_claims):
    cells, _ = tables
    v = verdicts(grid_claims[1], cells, None, bootstrap=0)
    assert "normal approximation" in v["interval_method"]
    ex = {e["claim"]["id"]: e for e in v["explanations"]}
    lo, hi = ex["stated_ctx"]["best"]["ci"]
    assert lo == pytest.approx(0.5 - 1.959964 * (0.25 / 50) ** 0.5, abs=1e-5)
    with pytest.raises(UserError, match="unknown claim id"):
        verdicts(grid_claims[1], cells, pair=("low_3b", "nope"))


def test_cli_map_writes_table_and_verdicts(tables, grid_claims, tmp_path, capsys):
    cells, samples = tables
    cpath, spath, shpath = tmp_path / "cells.parquet", tmp_path / "samples.parquet", tmp_path / "shares.csv"
    cells.to_parquet(cpath, index=False)
    samples.to_parquet(spath, index=False)
    SHARES.to_csv(shpath, index=False)
    out = tmp_path / "out"
    rc = main(["claims", "map", str(grid_claims[0]), "--cells", str(cpath), "--samples", str(spath),
               "--shares", str(shpath), "--bootstrap", "50", "--out", str(out)])
    assert rc == 0
    t = pd.read_csv(out / "claim_cells.csv")
    assert list(t["claim_id"]) == [c["id"] for c in GRID_CLAIMS]
    v = json.loads((out / "verdicts.json").read_text())
    assert v["most_explanatory_factor"]["effect"] == "model"
    # a bad pair id: exit 2, nothing written
    out2 = tmp_path / "out2"
    assert main(["claims", "map", str(grid_claims[0]), "--cells", str(cpath), "--pair", "low_3b,zz",
                 "--out", str(out2)]) == 2
    assert not out2.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --pair: unknown claim id 'zz'")


def test_shipped_claims_map_onto_a_grid_without_their_models(tables):
    cells, _ = tables
    t = map_claims_to_cells(load_claims([SHIPPED]), cells).set_index("claim_id")
    assert t.loc["mtraining_qwen25_3b_ruler", "n_cells"] == 4
    assert "model=qwen2.5-14b-instruct-1m is not in the grid" in t.loc["ruler_readme_qwen25_14b_instruct_1m", "missing"]
    # the grid records no dtype: the PBS claim's stated dtype is reported as unverified
    assert t.loc["pbs_attn_qwen25_7b_instruct_1m_ruler", "unverified"] == "dtype=bfloat16"


def test_percent_cells_are_normalised_and_the_claim_scale_selects_them(tmp_path):
    cells = pd.DataFrame([
        {"cell_id": "f", "model": M3, "scale": "fraction", "score": 0.4, "n_items": 10, "status": "ok"},
        {"cell_id": "p", "model": M3, "scale": "percent", "score": 40.0, "n_items": 10, "status": "ok"},
    ])
    path = write(tmp_path, "s.yaml", [claim("pct", 40.0), claim("frac", 0.4, scale="fraction")])
    t = map_claims_to_cells(load_claims([path]), cells).set_index("claim_id")
    assert t.loc["pct", "cell_ids"] == "p" and t.loc["frac", "cell_ids"] == "f"
    assert t.loc["pct", "grid_min"] == pytest.approx(0.4) and t.loc["pct", "claim_value"] == 0.4


def test_verdict_intervals_are_the_report_intervals(tables, grid_claims):
    """The verdicts and the report build the same item bootstrap (stats.ItemBootstrap.from_tables over the
    whole samples table, same replicates and seed): the same reading gets the same interval."""
    from reprogrid.stats import ItemBootstrap

    cells, samples = tables
    v = verdicts(grid_claims[1], cells, samples, bootstrap=300, seed=7)
    boot = ItemBootstrap.from_tables(samples, cells, 300, 7)
    ex = {e["claim"]["id"]: e for e in v["explanations"]}
    checked = 0
    for e in ex.values():
        for r in ([e["best"]] if e["best"] else []) + e["alternatives"]:
            est = boot.estimate(r["cell_ids"])
            assert r["ci"] == [est.low, est.high]
            checked += 1
    for r in v["reproducibility"]["readings"]:
        est = boot.estimate(r["cell_ids"])
        assert r["ci"] == [est.low, est.high]
    assert checked >= 5
    # a reading of two cells (the 7B mean over 4K and 8K) is the equal-weight mean of its cells
    high = ex["high_7b_avg"]["best"]
    assert len(high["cell_ids"]) == 2 and high["ci"] == [boot.estimate(high["cell_ids"]).low,
                                                        boot.estimate(high["cell_ids"]).high]
