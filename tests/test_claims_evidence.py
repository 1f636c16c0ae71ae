"""Claims that carry their evidence: model names as papers write them, verification status, weighted
aggregates (RULER's standard aggregations), value matching, and the published record on the grid."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from reprogrid.claims import (check_claims, load_claims, map_claims_to_cells, model_slug, published_record,
                              standard_aggregations, verdicts)
from reprogrid.cli import main

ROOT = Path(__file__).resolve().parents[1]
LITERATURE = ROOT / "configs" / "claims" / "qwen25_ruler_literature.yaml"
LONGPO = {"niah": 82.10, "vt": 80.09, "aggregation": 74.50, "qa": 54.30}
R14 = {4096: 97.5, 8192: 97.1, 16384: 94.6, 32768: 94.9, 65536: 94.9, 131072: 92.2}


def claim(cid, value, **kw):
    return {"id": cid, "source": kw.pop("source", {"paper": "A paper", "arxiv": "2501.00001"}),
            "model": kw.pop("model", "qwen2.5-3b"), "benchmark": "ruler", "value": value, "scale": "percent",
            "protocol": kw.pop("protocol", {}), **kw}


def write(tmp_path, claims, name="c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump({"claims": claims}, sort_keys=False))
    return p


def kinds(path_or_claims, pair=None):
    claims = load_claims([path_or_claims]) if isinstance(path_or_claims, Path) else path_or_claims
    return [(f.claim_id, f.kind) for f in check_claims(claims, pair)]


# ---------------------------------------------------------------------------------------------------
# model names


@pytest.mark.parametrize("name, slug", [
    ("Qwen/Qwen2.5-14B-Instruct-1M", "qwen2.5-14b-instruct-1m"),
    ("Qwen2.5-14B-Instruct-1M", "qwen2.5-14b-instruct-1m"),
    ("qwen2.5-14b-instruct-1m", "qwen2.5-14b-instruct-1m"),
    ("Qwen/Qwen2.5-3B", "qwen2.5-3b"),
])
def test_model_names_normalise_to_the_study_slug(tmp_path, name, slug):
    assert model_slug(name) == slug
    c = load_claims([write(tmp_path, [claim("a", 50.0, model=name)])])[0]
    assert c.model == slug and c.model_name == name


def test_a_paper_name_maps_onto_the_slug_cells(tmp_path):
    cells = pd.DataFrame([{"cell_id": "x", "model": "qwen2.5-3b", "score": 0.5, "n_items": 10, "status": "ok"},
                          {"cell_id": "y", "model": "qwen2.5-7b", "score": 0.9, "n_items": 10, "status": "ok"}])
    claims = load_claims([write(tmp_path, [claim("paper", 50.0, model="Qwen/Qwen2.5-3B"),
                                           claim("slug", 50.0, model="qwen2.5-3b")])])
    t = map_claims_to_cells(claims, cells).set_index("claim_id")
    assert t.loc["paper", "cell_ids"] == t.loc["slug", "cell_ids"] == "x"


# ---------------------------------------------------------------------------------------------------
# verification


def test_verification_status_and_absent_means_unverified(tmp_path):
    claims = {c.id: c for c in load_claims([write(tmp_path, [
        claim("seen", 50.0, verification={"status": "seen", "where": "Table 2, row 3"}),
        claim("copy", 60.0, verification={"status": "secondary", "where": "a blog\n copy"}),
        claim("none", 70.0)])])}
    assert claims["seen"].status == "seen" and claims["seen"].traceable
    assert claims["copy"].status == "secondary" and claims["copy"].verification["where"] == "a blog copy"
    assert claims["none"].status == "unverified" and claims["none"].verification is None


def test_check_says_first_which_claims_of_the_pair_are_not_traceable(tmp_path, capsys):
    path = write(tmp_path, [
        claim("agg_bad", 90.0, aggregate="mean", aggregate_over="context_length", components={4096: 70.0, 8192: 80.0}),
        claim("low", 1.9, verification={"status": "not_found", "where": "the paper's tables"}),
        claim("high", 95.7, model="qwen2.5-7b", source={"arxiv": "2502.00002"},
              verification={"status": "secondary", "where": "a summary"}),
        claim("other", 40.0, verification={"status": "not_found", "where": "nowhere"}),
    ])
    # default pair: lowest and highest value; their untraceable status comes before every other finding
    assert kinds(path) == [("low", "not_traceable"), ("high", "not_traceable"), ("agg_bad", "aggregate_mismatch")]
    # another pair: only its claims are reported
    assert kinds(path, ("other", "agg_bad"))[0] == ("other", "not_traceable")
    assert main(["claims", "check", str(path), "--pair", "other,agg_bad"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{path}: other: not_traceable: the pair's low claim (40.0) is not found")
    assert main(["claims", "check", str(path), "--pair", "low,nope"]) == 2
    assert "error: --pair: unknown claim id 'nope'" in capsys.readouterr().err


def test_unverified_claims_are_not_findings(tmp_path):
    assert kinds(write(tmp_path, [claim("a", 1.9), claim("b", 95.7, model="qwen2.5-7b")])) == []


def test_verdicts_carry_the_status(tmp_path):
    cells = pd.DataFrame([{"cell_id": "x", "model": "qwen2.5-3b", "score": 0.5, "n_items": 10, "status": "ok"}])
    claims = load_claims([write(tmp_path, [
        claim("low", 1.9, verification={"status": "not_found", "where": "Table 1"}),
        claim("high", 95.7, model="qwen2.5-7b", verification={"status": "seen", "where": "Table 2"})])])
    v = verdicts(claims, cells, bootstrap=0)
    assert v["pair"]["not_traceable"] == ["low"]
    assert v["pair"]["low"]["verification"] == {"status": "not_found", "where": "Table 1"}
    assert v["pair"]["high"]["verification"]["status"] == "seen"


# ---------------------------------------------------------------------------------------------------
# weighted aggregates and RULER's standard aggregations


def test_task_weighted_category_mean_is_not_a_finding(tmp_path):
    weights = {"niah": 8, "vt": 1, "aggregation": 2, "qa": 2}
    path = write(tmp_path, [
        claim("declared", 76.50, decimals=2, aggregate="mean", aggregate_over="task_category", components=LONGPO,
              weights=weights),
        # no weights: the plain mean of the four is 72.75, but 76.50 is RULER's 13-task score: no false alarm
        claim("undeclared", 76.50, decimals=2, aggregate="mean", aggregate_over="task_category", components=LONGPO),
        # declared weights that do not give the value: a finding
        claim("wrong_weights", 72.75, decimals=2, aggregate="mean", components=LONGPO, weights=weights),
    ])
    found = check_claims(load_claims([path]))
    assert [(f.claim_id, f.kind) for f in found] == [("wrong_weights", "aggregate_mismatch")]
    assert "weighted mean of its 4 components (weights 8, 1, 2, 2): 76.4992" in found[0].message
    names = standard_aggregations(load_claims([path])[1])
    assert names["task-weighted category mean (niah 8, vt 1, aggregation 2, qa 2)"] == [8, 1, 2, 2]


def test_no_standard_aggregation_reproduces_the_14b_average(tmp_path):
    path = write(tmp_path, [claim("r14", 95.7, decimals=1, model="qwen2.5-14b-instruct-1m", aggregate="mean",
                                  aggregate_over="context_length", components=R14)])
    (f,) = check_claims(load_claims([path]))
    assert f.kind == "aggregate_mismatch"
    assert "no standard RULER aggregation reproduces 95.7 from these components" in f.message
    assert "wAvg (inc) 94.419" in f.message and "wAvg (dec) 95.981" in f.message


def test_a_length_weighted_mean_is_named(tmp_path):
    # 95.98 is RULER's wAvg (dec) of the 14B row: reported as an average, it is still a finding, named
    path = write(tmp_path, [claim("dec", 96.0, decimals=1, aggregate="mean", aggregate_over="context_length",
                                  components=R14)])
    (f,) = check_claims(load_claims([path]))
    assert f.kind == "aggregate_mismatch" and "it is RULER's wAvg (dec) (95.981)" in f.message


# ---------------------------------------------------------------------------------------------------
# value matching


def test_equal_values_of_different_models_or_sources_are_one_finding_naming_both(tmp_path, capsys):
    path = write(tmp_path, [
        claim("copied", 95.7, model="qwen2.5-7b-instruct-1m", verification={"status": "not_found", "where": "x"}),
        claim("original", 95.7, model="qwen2.5-14b-instruct-1m", source={"arxiv": "2501.15383"},
              verification={"status": "seen", "where": "README"}),
        claim("finer", 95.72, model="qwen2.5-72b", source={"paper": "Another"}),
        claim("same_source_and_model", 95.7, model="qwen2.5-7b-instruct-1m"),
        claim("different", 95.8, model="qwen2.5-32b"),
    ])
    found = [f for f in check_claims(load_claims([path])) if f.kind == "possible_misattribution"]
    pairs = {(f.claim_id, f.message.split(" of ", 1)[1].split(" (", 1)[0]) for f in found}
    # one line per pair; the less verified claim carries it and the other id is named in it
    assert pairs == {("copied", "original"), ("copied", "finer"), ("finer", "original"),
                     ("same_source_and_model", "original"), ("same_source_and_model", "finer")}
    assert main(["claims", "check", str(path)]) == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "possible_misattribution" in ln]
    assert len(lines) == len(found)
    first = next(ln for ln in lines if ln.startswith(f"{path}: copied: possible_misattribution"))
    assert "original" in first


def test_no_value_match_within_one_model_and_source(tmp_path):
    assert kinds(write(tmp_path, [claim("a", 50.0), claim("b", 50.0)])) == []


# ---------------------------------------------------------------------------------------------------
# the published record


def test_literature_file_findings():
    assert kinds(LITERATURE) == [
        ("mtraining_qwen25_3b_ruler_1p9", "not_traceable"),
        ("pbs_attn_qwen25_7b_instruct_1m_ruler_95p7", "not_traceable"),
        ("pbs_attn_qwen25_7b_instruct_1m_ruler_95p7", "possible_misattribution"),
        ("ruler_readme_qwen25_14b_instruct_1m_avg", "aggregate_mismatch"),
    ]
    claims = {c.id: c for c in load_claims([LITERATURE])}
    assert {c.status for c in claims.values()} == {"seen", "secondary", "not_found"}
    assert claims["mtraining_summary_dense_dense"].status == "secondary"
    assert claims["mtraining_summary_dense_dense"].model == "qwen2.5-3b"


def test_claims_map_writes_the_published_record(tmp_path):
    cells = pd.DataFrame([
        {"cell_id": f"c{i}", "model": m, "context_length": L, "score": s, "n_items": 20, "status": "ok"}
        for i, (m, L, s) in enumerate([("qwen2.5-3b", 16384, 0.4), ("qwen2.5-3b", 32768, 0.3),
                                       ("qwen2.5-7b-instruct-1m", 4096, 0.9)])])
    cpath = tmp_path / "cells.csv"
    cells.to_csv(cpath, index=False)
    out = tmp_path / "claims"
    assert main(["claims", "map", str(LITERATURE), "--cells", str(cpath), "--bootstrap", "0", "--out", str(out)]) == 0
    pub = pd.read_csv(out / "published.csv", keep_default_na=False)
    assert list(pub.columns)[:4] == ["claim_id", "row", "source", "status"]
    r14 = pub[pub["claim_id"] == "ruler_readme_qwen25_14b_instruct_1m_avg"]
    assert list(r14["row"]) == ["aggregate"] + ["component"] * 6
    assert list(r14["context_length"])[1:] == ["4096", "8192", "16384", "32768", "65536", "131072"]
    assert r14.iloc[0]["aggregate"] == "mean over context_length" and r14.iloc[0]["value"] == pytest.approx(0.957)
    assert set(r14["in_grid"].astype(str)) == {"False"} and set(r14["status"]) == {"seen"}
    mt = pub[(pub["claim_id"] == "mtraining_summary_dense_minference") & (pub["row"] == "component")]
    assert set(mt["attn_implementation"]) == {"minference"} and set(mt["status"]) == {"secondary"}
    assert set(mt["in_grid"].astype(str)) == {"True"} and set(mt["unknown"]) == {""}
    pbs = pub[pub["claim_id"] == "pbs_attn_qwen25_7b_instruct_1m_ruler_95p7"].iloc[0]
    assert pbs["status"] == "not_found" and pbs["context_length"] == "" and pbs["unknown"] == "context_length"
    assert pbs["stated"] == "dtype=bfloat16"
    longpo = published_record(load_claims([LITERATURE]))
    agg = longpo[(longpo["claim_id"] == "longpo_readme_qwen25_7b_instruct") & (longpo["row"] == "aggregate")]
    assert agg.iloc[0]["aggregate"] == "weighted mean over task_category (niah:8, vt:1, aggregation:2, qa:2)"


# ---------------------------------------------------------------------------------------------------
# bad files: still one line each


@pytest.mark.parametrize("bad, expected", [
    (claim("a", 50.0, model="Qwen 2.5 3B"), "claims[0].model: 'Qwen 2.5 3B' is not a model name"),
    (claim("a", 50.0, verification={"status": "maybe", "where": "x"}),
     "claims[0].verification.status: expected one of 'seen', 'secondary', 'not_found', got 'maybe'"),
    (claim("a", 50.0, verification={"status": "seen"}), "claims[0].verification.where: required"),
    (claim("a", 50.0, verification="seen"), "claims[0].verification: expected a mapping {status, where}, got string"),
    (claim("a", 50.0, aggregate="mean", components={"niah": 50.0, "vt": 50.0}, weights={"niah": 8}),
     "claims[0].weights: expected the components' keys (missing vt)"),
    (claim("a", 50.0, weights={"niah": 8, "vt": 1}), "claims[0].components: an aggregate needs its `components`"),
    (claim("a", 50.0, aggregate="mean", components={"niah": 50.0, "vt": 50.0}, weights={"niah": -1, "vt": 1}),
     "claims[0].weights.niah: -1 is out of range"),
])
def test_bad_new_fields_exit_2_one_line(tmp_path, capsys, bad, expected):
    path = write(tmp_path, [bad])
    assert main(["claims", "check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: ") and expected in err[0], err


def test_weighted_aggregate_reads_the_grid_with_its_weights(tmp_path):
    cells = pd.DataFrame([{"cell_id": f"c{L}", "model": "qwen2.5-3b", "context_length": L, "score": s,
                           "n_items": 10, "status": "ok"} for L, s in ((4096, 0.9), (8192, 0.5))])
    path = write(tmp_path, [claim("w", 80.0, aggregate="mean", aggregate_over="context_length",
                                  components={4096: 90.0, 8192: 50.0}, weights={4096: 3, 8192: 1})])
    claims = load_claims([path])
    assert kinds(claims) == []
    t = map_claims_to_cells(claims, cells).set_index("claim_id")
    assert t.loc["w", "grid_min"] == pytest.approx(0.8) and t.loc["w", "aggregated"]
