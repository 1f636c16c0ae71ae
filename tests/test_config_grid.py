"""Config validation, the factor catalogue, grid expansion and generation ids."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, run_cli, run_main
from reprogrid.catalogue import factor_catalogue, generation_factors, scoring_factors
from reprogrid.study import load_study
from reprogrid.errors import UserError
from reprogrid.grid import expand, generations, to_tsv

BASE = {
    "study": "t",
    "models": {"m": {"source": "embedded", "embedded": "qwen2.5-coder-0.5b-instruct-q4_k_m"}},
    "ruler": {"tasks": ["niah_single_1", "ruler_fwe"], "n_items": 2},
    "factors": {"model": ["m"], "quantization": ["source", "q4_0"], "context_length": [512, 1024],
                "chat_template": [False, True], "metric": ["all_match", "any_match"], "split": ["all", "niah"]},
}


def cfg_file(tmp_path: Path, data: dict, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_catalogue_declares_every_factor_once_with_a_stage():
    cat = factor_catalogue()
    assert set(generation_factors()) | set(scoring_factors()) == set(cat)
    assert not set(generation_factors()) & set(scoring_factors())
    assert {"metric", "split", "scale", "aggregation"} == set(scoring_factors())
    for needed in ("model", "quantization", "tokenizer", "context_length", "num_fewshot", "chat_template"):
        assert cat[needed].stage == "generation"
        assert cat[needed].doc


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in
                                        [*REPO.glob("configs/*.yaml"), *REPO.glob("configs/studies/*.yaml"),
                                         *REPO.glob("tests/configs/*.yaml")]))
def test_every_shipped_config_validates(path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_study(path)
    assert len(expand(cfg)) >= 1


def test_grid_cells_and_generation_ids(tmp_path):
    cfg = load_study(cfg_file(tmp_path, BASE))
    df = expand(cfg)
    assert len(df) == 2 * 2 * 2 * 2 * 2  # every combination of the listed factors
    assert list(df.columns[:1]) == ["cell_id"] and "generation_id" in df.columns
    assert df["cell_id"].is_unique
    # scoring-only factors never force a new model run: 8 generation configs for 32 cells
    assert df["generation_id"].nunique() == 8
    for _, g in df.groupby("generation_id"):
        assert len(g) == 4
        assert g[["quantization", "context_length", "chat_template"]].nunique().max() == 1
    gens = generations(cfg)
    assert set(gens) == set(df["generation_id"])
    assert {g["prepared_key"] for g in gens.values()} == {"m--source", "m--q4_0"}


def test_generation_ids_are_stable_and_ignore_irrelevant_settings(tmp_path):
    a = expand(load_study(cfg_file(tmp_path, BASE, "a.yaml")))
    b = expand(load_study(cfg_file(tmp_path, BASE, "b.yaml")))
    assert a.equals(b)
    # temperature does not matter under greedy decoding: no new generation
    data = {**BASE, "factors": {**BASE["factors"], "temperature": [0.5, 1.0]}}
    c = expand(load_study(cfg_file(tmp_path, data, "c.yaml")))
    assert c["generation_id"].nunique() == 8 and len(c) == 64
    # ...but it does under sampling
    data["factors"]["decoding"] = ["sample"]
    d = expand(load_study(cfg_file(tmp_path, data, "d.yaml")))
    assert d["generation_id"].nunique() == 16


def test_exclusions_make_an_unbalanced_grid(tmp_path):
    data = {**BASE, "exclude": [{"quantization": "q4_0", "context_length": 1024}]}
    df = expand(load_study(cfg_file(tmp_path, data)))
    assert len(df) == 24
    assert not ((df.quantization == "q4_0") & (df.context_length == 1024)).any()


def test_grid_cli_prints_tsv(tmp_path):
    p = cfg_file(tmp_path, BASE)
    res = run_cli("grid", "--config", str(p))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().split("\n")
    assert lines[0].split("\t") == ["cell_id", "model", "quantization", "context_length", "chat_template",
                                    "metric", "split", "generation_id"]
    assert len(lines) == 33
    assert "\tfalse\t" in lines[1]
    out = tmp_path / "cells.tsv"
    assert run_main("grid", "--config", str(p), "--out", str(out)).returncode == 0
    assert out.read_text() == res.stdout


BAD_CONFIGS = [
    ("unknown top-level key", {**BASE, "factorz": {}}, "unknown key 'factorz'"),
    ("unknown factor", {**BASE, "factors": {**BASE["factors"], "quantisation": ["q4_0"]}}, "factors"),
    ("missing factors", {k: v for k, v in BASE.items() if k != "factors"}, "'factors' is required"),
    ("missing models", {k: v for k, v in BASE.items() if k != "models"}, "'models' is required"),
    ("missing study", {k: v for k, v in BASE.items() if k != "study"}, "'study' is required"),
    ("empty factor list", {**BASE, "factors": {**BASE["factors"], "metric": []}}, "factors.metric"),
    ("duplicate levels", {**BASE, "factors": {**BASE["factors"], "context_length": [512, 512]}}, "must not repeat"),
    ("unknown quantization", {**BASE, "factors": {**BASE["factors"], "quantization": ["q3_k"]}}, "factors.quantization[0]"),
    ("length as string", {**BASE, "factors": {**BASE["factors"], "context_length": ["4k"]}}, "factors.context_length[0]"),
    ("negative length", {**BASE, "factors": {**BASE["factors"], "context_length": [-5]}}, "out of range"),
    ("impossible length for task", {**BASE, "factors": {**BASE["factors"], "context_length": [300]}}, "too short"),
    ("vt too short", {**BASE, "ruler": {"tasks": ["ruler_vt"]}, "factors": {**BASE["factors"], "context_length": [768]}}, "ruler_vt"),
    ("chat template not bool", {**BASE, "factors": {**BASE["factors"], "chat_template": ["yes"]}}, "factors.chat_template[0]"),
    ("model level not a model", {**BASE, "factors": {**BASE["factors"], "model": ["qwen"]}}, "factors.model"),
    ("model slug with slash", {**BASE, "models": {"Qwen/Qwen2.5": {"source": "hf", "id": "Qwen/Qwen2.5", "revision": "a"}}}, "slug"),
    ("bad source", {**BASE, "models": {"m": {"source": "s3"}}}, "models.m.source"),
    ("embedded without key", {**BASE, "models": {"m": {"source": "embedded"}}}, "needs the key 'embedded'"),
    ("hf without revision", {**BASE, "models": {"m": {"source": "hf", "id": "Qwen/Qwen2.5-3B"}}}, "revision"),
    ("hf id malformed", {**BASE, "models": {"m": {"source": "hf", "id": "not an id", "revision": "x"}}}, "models.m.id"),
    ("unknown model key", {**BASE, "models": {"m": {"source": "embedded", "embedded": "x", "colour": 1}}}, "unknown key 'colour'"),
    ("unknown task", {**BASE, "ruler": {"tasks": ["niah_single_9"]}}, "ruler.tasks[0]"),
    ("online task offline", {**BASE, "ruler": {"tasks": ["niah_single_2"]}}, "not available offline"),
    ("asset dir missing", {**BASE, "ruler": {"tasks": ["niah_single_2"], "asset_dir": "/nonexistent/x"}}, "ruler.asset_dir"),
    ("n_items zero", {**BASE, "ruler": {"n_items": 0}}, "ruler.n_items"),
    ("n_items too many", {**BASE, "ruler": {"n_items": 501}}, "ruler.n_items"),
    ("tokenizer level unknown", {**BASE, "factors": {**BASE["factors"], "tokenizer": ["gpt4"]}}, "factors.tokenizer"),
    ("exclude unknown factor", {**BASE, "exclude": [{"colour": "red"}]}, "exclude[0]"),
    ("exclude unknown level", {**BASE, "exclude": [{"quantization": "q8_0"}]}, "exclude[0].quantization"),
    ("exclude everything", {**BASE, "exclude": [{"model": "m"}]}, "grid is empty"),
    ("study not slug", {**BASE, "study": "My Study!"}, "study"),
    ("seed negative", {**BASE, "seed": -1}, "seed"),
    ("claims file missing", {**BASE, "claims": {"files": ["nope.yaml"]}}, "claims.files"),
    ("factors not a mapping", {**BASE, "factors": ["model"]}, "factors"),
    ("temperature zero", {**BASE, "factors": {**BASE["factors"], "temperature": [0]}}, "factors.temperature[0]"),
    ("top level list", ["study"], "expected a mapping"),
    ("results outside the workdir", {**BASE, "paths": {"results": "../elsewhere"}}, "paths.results"),
    ("yarn on a small model", {**BASE, "models": {"m": {"source": "embedded", "embedded": "qwen2.5-coder-0.5b-instruct-q4_k_m",
                                                       "family": "qwen2.5-small", "rope_scaling": {"type": "yarn"}}}}, "rope_scaling"),
]


@pytest.mark.parametrize("name,data,expected", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_gives_one_clear_line_and_no_output(tmp_path, name, data, expected):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    out = tmp_path / "cells.tsv"
    res = run_main("grid", "--config", str(p), "--out", str(out))
    assert res.returncode == 2, (name, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in res.stderr
    assert not out.exists()


@pytest.mark.parametrize("text,expected", [
    ("study: t\nfactors: [unclosed\n", "malformed YAML at line"),
    ("study: t\n  bad: indent\n", "malformed YAML"),
    ("", "expected a mapping"),
    ("!!python/object/apply:os.system ['true']\n", "malformed YAML"),
])
def test_malformed_yaml(tmp_path, text, expected):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    res = run_main("grid", "--config", str(p))
    assert res.returncode == 2
    assert expected in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_missing_config_file(tmp_path):
    res = run_main("grid", "--config", str(tmp_path / "none.yaml"))
    assert res.returncode == 2 and "file not found" in res.stderr


def test_large_grid_expands_quickly(tmp_path):
    data = {**BASE, "factors": {"model": ["m"], "context_length": [512 * i for i in range(1, 11)],
                                "data_seed": list(range(10)), "batch_size": list(range(1, 11)),
                                "metric": ["all_match", "any_match", "exact_match"],
                                "split": ["all", "niah", "non_niah", "even", "odd"]}}
    cfg = load_study(cfg_file(tmp_path, data))
    df = expand(cfg)
    assert len(df) == 10 * 10 * 10 * 15
    assert df["generation_id"].nunique() == 1000
    assert to_tsv(df).count("\n") == len(df) + 1


def test_include_adds_cells_beyond_the_product(tmp_path):
    data = {**BASE, "exclude": [{"quantization": "q4_0", "context_length": 1024}],
            "include": [
                # an excluded cell asked back, e.g. one `reprogrid explain` named as missing
                {"quantization": "q4_0", "context_length": 1024, "chat_template": True,
                 "metric": "all_match", "split": "all"},
                # a level outside the listed ones (model has one level: it may be left out)
                {"quantization": "q8_0", "context_length": 512, "chat_template": False,
                 "metric": "any_match", "split": "niah"},
                # already in the product: not duplicated
                {"quantization": "source", "context_length": 512, "chat_template": False,
                 "metric": "all_match", "split": "all"},
            ]}
    cfg = load_study(cfg_file(tmp_path, data))
    cells = expand(cfg)
    assert len(cells) == 32 - 8 + 2
    q8 = cells[cells["quantization"] == "q8_0"]
    assert len(q8) == 1 and q8.iloc[0]["model"] == "m" and q8.iloc[0]["split"] == "niah"
    back = cells[(cells["quantization"] == "q4_0") & (cells["context_length"] == 1024)]
    assert len(back) == 1 and bool(back.iloc[0]["chat_template"]) is True
    gens = generations(cfg)
    assert {g["quantization"] for g in gens.values()} == {"source", "q4_0", "q8_0"}
    assert cells["cell_id"].is_unique


@pytest.mark.parametrize("cell,field,words", [
    ({"quantization": "q4_0"}, "include[0]", "'context_length' has several levels"),
    ({"temperature": 0.5, "quantization": "q4_0", "context_length": 512, "chat_template": True,
      "metric": "all_match", "split": "all"}, "include[0]", "not a listed factor"),
    ({"bogus": 1}, "include[0]", "not a factor"),
    ({"quantization": "q3_k", "context_length": 512, "chat_template": True, "metric": "all_match",
      "split": "all"}, "include[0].quantization", "is not one of"),
    ({"quantization": "q4_0", "context_length": 256, "chat_template": True, "metric": "all_match",
      "split": "all"}, "factors.context_length", "too short"),
])
def test_bad_include_names_the_field(tmp_path, cell, field, words):
    with pytest.raises(UserError, match=words) as e:
        load_study(cfg_file(tmp_path, {**BASE, "include": [cell]}))
    assert field in str(e.value)


def test_ids_of_an_existing_study_stay_what_they_were(tmp_path):
    """Cell and generation ids are where finished work is found: a code change that adds a factor must not
    move them. These are the tiny study's ids as first recorded (before template_family and answer_prefix
    existed); a late factor set to a non-default level does get new ids."""
    from reprogrid.grid import expand
    from reprogrid.study import load_study

    cfg = load_study(REPO / "tests" / "configs" / "tiny.yaml")
    cells = expand(cfg)
    assert list(cells["cell_id"]) == ["c9edd6c4e7d", "c93c420c077", "c48c62ee4a5", "cd5e1ade645"]
    assert list(cells["generation_id"]) == ["g5386d32113", "g5386d32113", "g63d9008932", "g63d9008932"]
    raw = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    raw["factors"]["answer_prefix"] = ["dropped"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    moved = expand(load_study(tmp_path / "c.yaml"))
    assert set(moved["cell_id"]).isdisjoint(cells["cell_id"])
    assert set(moved["generation_id"]).isdisjoint(cells["generation_id"])
