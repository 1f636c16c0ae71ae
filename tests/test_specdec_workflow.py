"""The speculative decoding study as the workflow runs it: the config section, its cells, and the per-cell
`reprogrid specdec run` / `collect` / `attribute` verbs end to end on two tiny random Qwen2 models.

The models share a byte-level tokenizer (259 tokens, LM head padded to 272 rows) and are saved as transformers
directories, exactly what `reprogrid prepare-model` produces for the real pair; the drafter is the verifier with
seeded weight noise, so acceptance lies strictly between 0 and 1.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, byte_tokenizer, run_main
from reprogrid.cli import main
from reprogrid.study import load_study
from reprogrid.errors import UserError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from reprogrid.specdec.cells import CELL_COLUMNS, study_cells, study_settings  # noqa: E402
from reprogrid.specdec.study import STEP_COLUMNS, STUDY_COLUMNS  # noqa: E402

torch.set_num_threads(1)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def base_config(tmp_path: Path, v_dir: str = "v", d_dir: str = "d", **specdec) -> dict:
    section = {
        "pairs": [{"name": "noisy-drafts-tiny", "verifier": "tiny-verifier", "drafter": "tiny-drafter"}],
        "gamma": [3], "decoding": ["greedy"], "tasks": ["code", "math"], "prompts_per_task": 2,
        "max_new_tokens": 10, "mix": ["single", "interleaved"], "chat_template": [True], "timing_steps": 2,
        "bootstrap": 50,
    }
    section.update(specdec)
    return {
        "study": "sd-tiny", "seed": 3, "paths": {"results": str(tmp_path / "results")},
        "models": {"tiny-verifier": {"source": "local_dir", "path": str(tmp_path / v_dir)},
                   "tiny-drafter": {"source": "local_dir", "path": str(tmp_path / d_dir)}},
        "ruler": {"tasks": ["niah_single_1"], "n_items": 1},
        "factors": {"model": ["tiny-verifier"], "context_length": [512]},
        "specdec": section,
    }


def write(tmp_path: Path, data: dict, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


# ------------------------------------------------------------------------------------------- config section


@pytest.mark.parametrize("change, field", [
    ({"pairs": [{"verifier": "nope", "drafter": "tiny-drafter"}]}, "specdec.pairs[0].verifier"),
    ({"pairs": [{"verifier": "tiny-verifier", "drafter": "gone"}]}, "specdec.pairs[0].drafter"),
    ({"gamma": [0]}, "specdec.gamma[0]"),
    ({"gamma": [2.5]}, "specdec.gamma[0]"),
    ({"decoding": ["beam"]}, "specdec.decoding[0]"),
    ({"temperature": 0}, "specdec.temperature"),
    ({"tasks": ["poetry"]}, "specdec.tasks"),
    ({"mix": ["batched"]}, "specdec.mix[0]"),
    ({"chat_template": ["yes"]}, "specdec.chat_template[0]"),
    ({"prompts_per_task": 9}, "specdec.prompts_per_task"),
    ({"draft_len": 4}, "specdec"),
    ({"pairs": [{"verifier": "tiny-verifier", "drafter": "tiny-verifier"}]}, "specdec.pairs[0]"),
    ({"pairs": [{"verifier": "tiny-verifier", "drafter": "tiny-drafter", "drafter_quantization": "q3"}]},
     "specdec.pairs[0].drafter_quantization"),
    ({"pairs": [{"name": "a", "verifier": "tiny-verifier", "drafter": "tiny-drafter"},
                {"name": "a", "verifier": "tiny-drafter", "drafter": "tiny-verifier"}]}, "specdec.pairs[1].name"),
    ({"backend": ["vllm"]}, "specdec.pairs[0].verifier"),  # vLLM needs CUDA models
    ({"pairs": []}, "specdec.pairs"),
])
def test_bad_specdec_section_is_one_line_naming_the_field(tmp_path, capsys, change, field):
    path = write(tmp_path, base_config(tmp_path, **change))
    assert main(["grid", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"{path}: {field}" in err, err


def test_bad_section_through_the_real_command(tmp_path):
    path = write(tmp_path, base_config(tmp_path, gamma=[-1]))
    res = run_main("grid", "--config", str(path))
    assert res.returncode == 2 and "specdec.gamma[0]" in res.stderr and res.stderr.count("\n") == 1


def test_shipped_study_configs_cells_and_defaults(monkeypatch):
    monkeypatch.chdir(REPO)
    off = load_study("configs/studies/specdec_offline.yaml")
    cells = study_cells(off)
    assert len(cells) == 2 * 1 * 1 * 2 * 1  # pairs x gamma x decoding x mix x chat
    keys = {(c["verifier_key"], c["drafter_key"]) for c in cells.values()}
    assert keys == {("qwen25-coder-1.5b-instruct--source", "qwen25-coder-0.5b-instruct--source"),
                    ("qwen25-coder-1.5b-instruct--source", "qwen25-coder-1.5b-instruct--q4_0")}
    gpu = load_study("configs/studies/specdec_gpu.yaml")
    s = study_settings(gpu)
    assert {p["name"]: p["on_vocab_mismatch"] for p in s["pairs"]}["0.5b-drafts-7b"] == "skip"
    assert {c["backend"] for c in study_cells(gpu).values()} == {"hf", "vllm"}
    # defaults come from the schema; pair names default to <drafter>[.level]-drafts-<verifier>[.level]
    raw = {"models": {"a": {}, "b": {}}, "specdec": {"pairs": [{"verifier": "a", "drafter": "a",
                                                                "drafter_quantization": "q4_0"}]}}
    s = study_settings(raw)
    assert s["pairs"][0]["name"] == "a.q4_0-drafts-a" and s["gamma"] == [4] and s["backend"] == ["hf"]
    assert list(study_cells(raw)) == ["a.q4_0-drafts-a__g4__greedy__single__chat"]
    with pytest.raises(UserError, match="no specdec section"):
        study_settings({"models": {}})


# ------------------------------------------------------------------------------------------- tiny end to end


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """Verifier, noisy drafter (same vocab) and a drafter with a larger LM head, saved as model directories."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("sdwf")
    tok = byte_tokenizer()
    tok.chat_template = CHAT_TEMPLATE

    def model(vocab_size: int, seed: int):
        torch.manual_seed(seed)
        cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=128, max_position_embeddings=1024,
                          initializer_range=0.2, tie_word_embeddings=True)
        return Qwen2ForCausalLM(cfg).eval()

    verifier = model(272, 0)
    drafter = copy.deepcopy(verifier)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in drafter.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.03 * p.std().clamp_min(1e-3))
    wide = model(288, 2)
    for m, name in ((verifier, "v"), (drafter, "d"), (wide, "wide")):
        m.generation_config.eos_token_id = None  # fixed-length outputs: every prompt gives max_new_tokens
        m.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


def test_run_collect_attribute_end_to_end(tiny_pair, capsys):
    root = tiny_pair
    cfg_path = write(root, base_config(root), "study.yaml")
    cells = list(study_cells(load_study(cfg_path)))
    assert cells == ["noisy-drafts-tiny__g3__greedy__single__chat", "noisy-drafts-tiny__g3__greedy__interleaved__chat"]
    out = root / "results" / "specdec"
    for cid in cells:
        rc = main(["specdec", "run", "--config", str(cfg_path), "--cell", cid, "--verifier-dir", str(root / "v"),
                   "--drafter-dir", str(root / "d"), "--threads", "1", "--out", str(out / "cells")])
        assert rc == 0, capsys.readouterr().err
    # the factor flags name the same cell as --cell
    rc = main(["specdec", "run", "--config", str(cfg_path), "--mix", "single", "--verifier-dir", str(root / "v"),
               "--drafter-dir", str(root / "d"), "--threads", "1", "--out", str(root / "again")])
    assert rc == 0 and (root / "again" / f"{cells[0]}.parquet").is_file()

    table = pd.read_parquet(out / "cells" / f"{cells[1]}.parquet")
    assert list(table.columns) == CELL_COLUMNS + [c for c in STUDY_COLUMNS if c not in CELL_COLUMNS]
    assert len(table) == 4 and set(table["task"]) == {"code", "math"}
    assert list(table.sort_values("position")["task"]) == ["code", "math", "code", "math"]  # interleaved
    assert (table["status"] == "ok").all() and (table["pair"] == "noisy-drafts-tiny").all()
    assert (table["new_tokens"] == 10).all() and (table["gamma"] == 3).all()
    # greedy invariance: speculative decoding leaves every output unchanged
    assert table["outputs_identical"].astype(bool).all()
    assert table["replay_matches_observed"].astype(bool).all()
    for col in ("alpha_analytic", "alpha_greedy", "alpha_empirical", "acceptance_rate_tokens", "c",
                "speedup_measured", "speedup_predicted", "cross_entropy", "tokens_per_step",
                "expected_tokens_per_step"):
        assert table[col].notna().all(), col
    assert ((table["acceptance_rate_tokens"] >= 0) & (table["acceptance_rate_tokens"] <= 1)).all()
    steps = pd.read_parquet(out / "cells" / f"{cells[1]}.steps.parquet")
    assert list(steps.columns) == ["cell_id"] + STEP_COLUMNS and (steps["drafted"] <= 3).all()
    meta = json.loads((out / "cells" / f"{cells[1]}.json").read_text())
    assert meta["status"] == "ok" and meta["outputs_identical_all"] is True and meta["mix"] == "interleaved"

    tables = [str(out / "cells" / f"{c}.parquet") for c in cells]
    assert main(["specdec", "collect", "--config", str(cfg_path), "--out", str(out), *tables]) == 0
    df = pd.read_parquet(out / "specdec.parquet")
    assert len(df) == 8 and set(df["mix"]) == {"single", "interleaved"}
    report_columns = {"task", "speedup_measured", "speedup_predicted", "alpha_empirical", "alpha_analytic",
                      "tokens_per_step", "expected_tokens_per_step", "cross_entropy", "gamma", "decoding"}
    assert report_columns <= set(df.columns)
    assert df["speedup_predicted_block"].notna().all()  # E / (gamma c + verify cost ratio)
    dis = json.loads((out / "disparity.json").read_text())
    assert set(dis["groups"]) == {"code", "math"} and dis["max_min_ratio"] >= 1
    assert dis["by_pair"]["noisy-drafts-tiny"]["acceptance"]["value"] == "alpha_empirical"
    per_task = dis["by_pair"]["noisy-drafts-tiny"]["per_task"]
    assert set(per_task) == {"code", "math"} and per_task["code"]["speedup_predicted_block"] > 0
    assert dis["invariance"]["noisy-drafts-tiny"] == {"greedy_prompts": 8, "identical": 8, "all_identical": True}
    assert set(dis["mix"]["noisy-drafts-tiny"]) == {"single", "interleaved"}
    assert set(dis["cell_status"].values()) == {"ok"} and dis["ce_variance"] is not None

    assert main(["specdec", "attribute", str(out / "specdec.parquet"), "--bootstrap", "10", "--out", str(out)]) == 0
    sp = pd.read_csv(out / "attribution_speedup.csv")
    assert set(sp["effect"]) >= {"task", "mix", "residual"}
    acc = json.loads((out / "attribution_acceptance.json").read_text())
    assert acc["response"] == "alpha_empirical" and acc["item"] == "prompt_id"


def test_vocab_mismatch_is_refused_or_recorded(tiny_pair, capsys):
    root = tiny_pair
    bad = write(root, base_config(root, d_dir="wide", mix=["single"]), "wide.yaml")
    cid = "noisy-drafts-tiny__g3__greedy__single__chat"
    args = ["specdec", "run", "--config", str(bad), "--cell", cid, "--verifier-dir", str(root / "v"),
            "--drafter-dir", str(root / "wide"), "--out", str(root / "wide-out")]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "272 != drafter vocabulary 288" in err and "different-tokenizer" in err and "on_vocab_mismatch" in err

    pairs = [{"name": "noisy-drafts-tiny", "verifier": "tiny-verifier", "drafter": "tiny-drafter",
              "on_vocab_mismatch": "skip"}]
    skip = write(root, base_config(root, d_dir="wide", mix=["single"], pairs=pairs), "skip.yaml")
    args[3] = str(skip)
    assert main(args) == 0
    table = pd.read_parquet(root / "wide-out" / f"{cid}.parquet")
    assert len(table) == 0 and list(table.columns)[:len(CELL_COLUMNS)] == CELL_COLUMNS
    meta = json.loads((root / "wide-out" / f"{cid}.json").read_text())
    assert meta["status"].startswith("skipped: verifier vocabulary 272 != drafter vocabulary 288")

    assert main(["specdec", "collect", "--config", str(skip), "--out", str(root / "wide-sum"),
                 str(root / "wide-out" / f"{cid}.parquet")]) == 0
    dis = json.loads((root / "wide-sum" / "disparity.json").read_text())
    assert dis["cell_status"][cid].startswith("skipped") and dis["groups"] == {}
    assert main(["specdec", "attribute", str(root / "wide-sum" / "specdec.parquet"), "--out",
                 str(root / "wide-sum")]) == 0
    assert json.loads((root / "wide-sum" / "attribution_speedup.json").read_text())["degenerate"]


def test_unknown_cell_and_missing_model_dir(tiny_pair, capsys):
    root = tiny_pair
    cfg_path = write(root, base_config(root), "study2.yaml")
    capsys.readouterr()
    assert main(["specdec", "run", "--config", str(cfg_path), "--cell", "nope", "--verifier-dir", str(root / "v"),
                 "--drafter-dir", str(root / "d"), "--out", str(root / "x")]) == 2
    assert "unknown cell 'nope'" in capsys.readouterr().err
    assert main(["specdec", "run", "--config", str(cfg_path), "--verifier-dir", str(root / "v"),
                 "--drafter-dir", str(root / "d"), "--out", str(root / "x")]) == 2
    assert "--mix" in capsys.readouterr().err  # two mixes configured: the flag must pick one
    assert main(["specdec", "run", "--config", str(cfg_path), "--mix", "single", "--verifier-dir",
                 str(root / "missing"), "--drafter-dir", str(root / "d"), "--out", str(root / "x")]) == 2
    assert "config.json" in capsys.readouterr().err
