"""The mitigation (reprogrid's s-CDF): LoRA on the drafter reduces the top-k KL on the trained tasks, the verifier's
outputs do not change, the merged drafter round-trips with its checksum, bad settings are refused in one line.

Models: tiny random Qwen2 networks (vocabulary 272 rows, a 259-token byte-level tokenizer) as in test_specdec.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from conftest import byte_tokenizer  # noqa: E402
from test_specdec import make_model  # noqa: E402

from reprogrid.cli import main  # noqa: E402
from reprogrid.errors import UserError  # noqa: E402
from reprogrid.specdec.distill import (build_distillation, kl_by_task, load_distillation,  # noqa: E402
                                       save_distillation)
from reprogrid.specdec.lora import (load_adapter, load_mitigated, lora_wrap, train_lora,  # noqa: E402
                                   verify_mitigated)
from reprogrid.specdec.mitigate import MitigationSettings, check_settings, select_tasks  # noqa: E402
from reprogrid.specdec.mitigate_run import run_mitigation  # noqa: E402
from reprogrid.specdec.pairs import NOT_MEASURED  # noqa: E402
from reprogrid.specdec.prompts import encode_prompt  # noqa: E402

torch.set_num_threads(1)
VOCAB = 272
TEXTS = {"code": ["def add(a, b):", "for i in range(", "import numpy as"],
         "prose": ["The river ran", "Once upon a time", "She opened the"],
         "math": ["2 + 2 =", "The square root of", "Solve for x:"]}


def _tokenizer():
    return byte_tokenizer()


def _save(model, tok, path):
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(verifier dir, drafter dir, prompts file, tokenizer): two independently initialised tiny models."""
    root = tmp_path_factory.mktemp("mitigate")
    tok = _tokenizer()
    verifier, drafter = make_model(0), make_model(1)
    lines = [json.dumps({"task": t, "prompt_id": f"{t}-{i}", "text": x}) for t, xs in TEXTS.items()
             for i, x in enumerate(xs)]
    prompts = root / "prompts.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    return _save(verifier, tok, root / "verifier"), _save(drafter, tok, root / "drafter"), prompts, tok


def _settings(pair, out, **kw):
    v, d, prompts, _ = pair
    base = dict(verifier=str(v), drafter=str(d), out=str(out), prompts=str(prompts), train_per_task=2,
                heldout_per_task=1, top_k=8, distill_tokens=6, budget=8, batch_size=2, lr=5e-3, gamma=3,
                max_new_tokens=6, timing_steps=1, n_boot=50, lora_rank=4)
    base.update(kw)
    return MitigationSettings(**base)


def _data(pair, tasks=("code", "prose")):
    v, _, prompts, tok = pair
    from reprogrid.models import load_prepared

    verifier, _ = load_prepared(v)
    items = [json.loads(line) for line in prompts.read_text().splitlines()]
    encoded = [(p, encode_prompt(tok, p)) for p in items if p["task"] in tasks and not p["prompt_id"].endswith("2")]
    return build_distillation(verifier, tok, encoded, max_new_tokens=6, top_k=8, vocab=VOCAB)


def test_lora_update_reduces_kl_on_training_tasks(pair, tmp_path):
    from reprogrid.models import load_prepared

    data = _data(pair)
    path = save_distillation(data, tmp_path / "d.npz")
    again = load_distillation(path)
    assert all(np.array_equal(again[k], data[k]) for k in ("tokens", "topk_ids", "offsets"))
    drafter, _ = load_prepared(pair[1])
    reference = {k: v.clone() for k, v in drafter.state_dict().items()}
    student = lora_wrap(drafter, rank=4, alpha=8, seed=0)
    before = kl_by_task(student, data, VOCAB)
    history = train_lora(student, data, {"code": 0.7, "prose": 0.3}, steps=15, batch_size=2, lr=1e-2, vocab=VOCAB,
                         seed=0)
    after = kl_by_task(student, data, VOCAB)
    assert len(history) == 15 and set(before) == {"code", "prose"}
    for task in before:
        assert after[task] < before[task] * 0.9, (task, before[task], after[task])
    # the drafter handed in is untouched (training works on a copy)
    assert all(torch.equal(reference[k], v) for k, v in drafter.state_dict().items())


def test_selection_weights_grow_with_deficit():
    sel = select_tasks({"a": 0.9, "b": 0.5, "c": 0.2, "d": 0.8}, 0, 1.0, 0.01)
    assert sel["under_served"] == ["c", "b"]
    assert sel["weights"]["c"] > sel["weights"]["b"] > 0
    assert sum(sel["weights"].values()) == pytest.approx(1.0)
    assert select_tasks({"a": 0.9, "b": 0.5, "c": 0.2}, 1, 1.0, 0.01)["under_served"] == ["c"]


def test_mitigation_end_to_end(pair, tmp_path):
    """Verifier outputs identical with either drafter; merged drafter saved, re-loaded through its checksum."""
    out = tmp_path / "out"
    summary = run_mitigation(_settings(pair, out), log=lambda m: None)
    check = summary["comparison"]["verifier_outputs"]
    assert check["identical"] and check["n_prompts"] == 3 and check["plain_outputs_equal"]
    trained = [t for t, k in summary["training_kl"].items() if k["trained_on"]]
    assert trained and all(summary["training_kl"][t]["change"] < 0 for t in trained)
    change = summary["comparison"]["change"]["alpha_analytic"]
    assert set(change["tasks"]) == set(TEXTS) and len(change["cv"]["change_ci"]) == 2
    assert summary["comparison"]["fairness"]["measure"] == "ce_variance"
    assert set(summary["well_served"]) == set(TEXTS) - set(summary["selection"]["under_served"])
    for name in ("distill.npz", "training.parquet", "before.parquet", "after.parquet", "mitigation.json"):
        assert (out / name).is_file(), name
    info = verify_mitigated(out / "drafter")
    assert info["weights_sha256"] == summary["drafter_weights_sha256"]
    assert info["adapter"]["sha256"] and info["mitigation"]["under_served"]
    model, _, _ = load_mitigated(out / "drafter")
    # adapter round trip: base drafter + saved adapter (its checksums verified), merged, equals the saved drafter
    from reprogrid.models import load_prepared

    base, _ = load_prepared(pair[1])
    reference = {k: v.clone() for k, v in base.state_dict().items()}
    merged = load_adapter(base, out / "adapter", out / "drafter").merge_and_unload()
    saved = model.state_dict()
    assert set(merged.state_dict()) == set(saved)
    assert all(torch.allclose(v, saved[k], atol=1e-6) for k, v in merged.state_dict().items())
    assert any(not torch.allclose(v, reference[k]) for k, v in saved.items())  # the update is not a no-op
    # a changed adapter file is refused by its checksum
    adapter = next((out / "adapter").glob("*.safetensors"))
    adapter.write_bytes(adapter.read_bytes()[:-4] + b"\0\0\0\0")
    base, _ = load_prepared(pair[1])
    with pytest.raises(UserError, match="do not match the checksums"):
        load_adapter(base, out / "adapter", out / "drafter")
    # a changed weight file is refused by its checksum
    weights = next((out / "drafter").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(UserError, match="weights sha256"):
        load_mitigated(out / "drafter")


@pytest.fixture(scope="module")
def wide_drafter(pair, tmp_path_factory):
    return _save(make_model(1, vocab=VOCAB + 16), pair[3], tmp_path_factory.mktemp("wide") / "drafter")


@pytest.mark.parametrize("flags, expected", [
    (["--tasks", "code,poetry"], "tasks: task 'poetry' has no prompts"),
    (["--lora-rank", "0"], "error: --lora-rank: must be an integer >= 1, got 0"),
    (["--budget", "3", "--batch-size", "4"], "error: --budget: 3 training examples is too small for one step"),
    (["--heldout-per-task", "2"], "tasks: task 'code' has 3 prompts"),
    (["WIDE"], f"error: --drafter: verifier vocabulary 272 != drafter vocabulary 288: {NOT_MEASURED}"),
])
def test_bad_settings_refused_in_one_line_before_work(pair, wide_drafter, tmp_path, capsys, flags, expected):
    v, d, prompts, _ = pair
    if flags == ["WIDE"]:
        d, flags = wide_drafter, []
    out = tmp_path / "out"
    code = main(["specdec", "mitigate", "--verifier", str(v), "--drafter", str(d), "--prompts", str(prompts),
                 "--out", str(out), "--heldout-per-task", "1", *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ")
    assert expected in err
    assert not out.exists()  # refused before any work


def test_check_settings_split(pair, tmp_path):
    train, heldout = check_settings(_settings(pair, tmp_path / "o"))
    assert [p["prompt_id"] for p in train if p["task"] == "code"] == ["code-0", "code-1"]
    assert [p["prompt_id"] for p in heldout] == ["code-2", "prose-2", "math-2"]
    with pytest.raises(UserError, match="--out: must not be a model directory"):
        check_settings(_settings(pair, pair[1]))


# ------------------------------------------------------------------------------------------- config section


def test_shipped_mitigation_configs(monkeypatch):
    from conftest import REPO

    from reprogrid.specdec.cells import mitigation_pair, mitigation_values, study_settings
    from reprogrid.study import load_study

    monkeypatch.chdir(REPO)
    off = load_study("configs/studies/specdec_mitigation.yaml")
    assert mitigation_pair(off)["drafter_key"] == "qwen25-coder-0.5b-instruct--source"
    values = mitigation_values(study_settings(off))
    s = MitigationSettings(verifier="", drafter="", out="", **values)
    assert s.tasks[0] == "code" and s.chat_template is True and s.budget // s.batch_size == 16
    assert (s.timing_steps, s.n_boot) == (8, 2000)  # the section's, as for its cells and disparity intervals
    gpu = load_study("configs/studies/specdec_mitigation_gpu.yaml")
    assert mitigation_pair(gpu)["verifier"] == "qwen2.5-3b-instruct"
    # the report waits for the mitigation and shows its run time; a study without one does not
    from reprogrid.workflow import StudyWorkflow

    W = StudyWorkflow("configs/studies/specdec_mitigation.yaml")
    assert W.report_inputs()["mitigation"] == W.layout.specdec_mitigation
    assert W.layout.benchmark("specdec_mitigate") in W.report_benchmarks()
    plain = StudyWorkflow("configs/studies/specdec_offline.yaml")
    assert "mitigation" not in plain.report_inputs()
    assert plain.layout.benchmark("specdec_mitigate") not in plain.report_benchmarks()


@pytest.mark.parametrize("mitigation, field, text", [
    ({"budget": 2, "batch_size": 4}, "specdec.mitigation.budget", "too small for one step"),
    ({"lora_rank": 0}, "specdec.mitigation.lora_rank", ""),
    ({"pair": "nope"}, "specdec.mitigation.pair", "'nope' is not a pair name"),
    ({"train_per_task": 3, "heldout_per_task": 2}, "specdec.mitigation.tasks", "need 5"),
])
def test_bad_mitigation_section_is_one_line(tmp_path, capsys, mitigation, field, text):
    from test_specdec_workflow import base_config, write

    path = write(tmp_path, base_config(tmp_path, mitigation=mitigation))
    assert main(["grid", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"{path}: {field}" in err and text in err, err


def test_mitigate_command_from_a_config(pair, tmp_path, capsys):
    """The rule's invocation: settings from specdec.mitigation + tasks + chat_template, flags override."""
    from test_specdec_workflow import base_config, write

    v, d, _, _ = pair
    cfg = base_config(tmp_path, chat_template=[False], tasks=["code", "math"],
                      mitigation={"train_per_task": 2, "heldout_per_task": 1, "budget": 4, "batch_size": 2,
                                  "top_k": 8, "distill_tokens": 4, "lora_rank": 2, "max_new_tokens": 4, "gamma": 2})
    path = write(tmp_path, cfg)
    out = tmp_path / "m"
    code = main(["specdec", "mitigate", "--config", str(path), "--verifier", str(v), "--drafter", str(d),
                 "--out", str(out), "--n-boot", "20", "--timing-steps", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "verifier outputs identical: True" in captured.out
    summary = json.loads((out / "mitigation.json").read_text())
    assert summary["settings"]["lora_rank"] == 2 and summary["settings"]["n_boot"] == 20
    assert summary["steps"] == 2 and summary["split"]["heldout"] == ["code/code-03", "math/math-03"]
    assert summary["split"]["train"] == ["code/code-01", "code/code-02", "math/math-01", "math/math-02"]
