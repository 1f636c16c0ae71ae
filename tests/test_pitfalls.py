"""Protocol pitfalls on synthetic grids with known answers: the single-mistake table, its paired intervals,
the verdicts, and one-line errors for a bad `pitfalls:` section."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli, run_main, write_config
from reprogrid.errors import UserError
from reprogrid.pitfalls import Setting, best_to_worst, check_reference, measure, path_answer, single_mistake_answer

LISTED = ["answer_prefix", "template_family", "metric"]


def synthetic(n_items: int = 60, seed: int = 0, drop_effect: float = 0.8):
    """answer_prefix=dropped costs `drop_effect` on every item; template_family and metric change nothing."""
    rng = np.random.default_rng(seed)
    base = rng.random(n_items) < 0.9  # item difficulty: the same items in every cell
    lost = rng.random(n_items) < drop_effect  # the items the dropped prefix breaks, in every cell that drops it
    cells, rows = [], []
    for i, (ap, tf, m) in enumerate(itertools.product(["kept", "dropped"], ["own", "llama2"],
                                                      ["all_match", "any_match"])):
        cid = f"c{i}"
        cells.append({"cell_id": cid, "answer_prefix": ap, "template_family": tf, "metric": m, "status": "ok"})
        for j in range(n_items):
            y = float(base[j])
            if ap == "dropped" and lost[j]:
                y = 0.0
            rows.append({"cell_id": cid, "task": ["vt", "cwe"][j % 2], "item_id": str(j), "score": y})
    return pd.DataFrame(rows), pd.DataFrame(cells)


def test_a_real_mistake_is_an_effect_and_a_null_factor_is_noise():
    samples, cells = synthetic()
    res = measure(samples, cells, LISTED, Setting({"answer_prefix": "kept", "template_family": "own"}, 400, 1))
    rows = {(r["factor"], r["level"]): r for r in res["rows"]}
    ap, tf = rows[("answer_prefix", "dropped")], rows[("template_family", "llama2")]
    assert ap["n_pairs"] == 4 and tf["n_pairs"] == 4
    # the known answer: minus the share of items that were right and are broken, averaged over the two tasks
    s = samples.merge(cells, on="cell_id")
    kept = s[(s["answer_prefix"] == "kept")].groupby(["task", "item_id"])["score"].mean()
    gone = s[(s["answer_prefix"] == "dropped")].groupby(["task", "item_id"])["score"].mean()
    assert ap["marginal"] == pytest.approx((gone - kept).groupby("task").mean().mean())
    assert ap["marginal_low"] <= ap["marginal"] <= ap["marginal_high"] < -0.3
    assert ap["verdict"].startswith("an effect: lowers the score by")
    # the template family changes nothing: identical scores in every pair, a zero difference, no effect claimed
    assert tf["marginal"] == 0 and tf["verdict"].startswith("indistinguishable from item noise")
    # the best cell has every pitfall at its reference; its one-mistake twin is the worst drop
    assert res["best"]["mistakes"] == {}
    assert res["worst"]["mistakes"].get("answer_prefix") == "dropped"
    assert ap["from_best_cell"] and ap["drop"] == pytest.approx(ap["from_best"] - res["best"]["score"])
    assert "answer_prefix=dropped" in single_mistake_answer(res)


def test_path_from_best_to_worst_puts_the_gap_on_the_real_mistake():
    """Only the dropped prefix changes scores: the Shapley path gives it the whole gap, the rest zero."""
    samples, cells = synthetic(seed=4)
    res = measure(samples, cells, LISTED, Setting({"answer_prefix": "kept", "template_family": "own"}, 300, 2))
    path = best_to_worst(samples, cells, res, 300, 2)
    assert path["complete"] and path["from"] == res["best"]["cell_id"] and path["to"] == res["worst"]["cell_id"]
    contrib = {c["factor"]: c for c in path["contributions"]}
    assert "answer_prefix" in contrib
    gap = res["worst"]["score"] - res["best"]["score"]
    assert path["gap"] == pytest.approx(gap) and gap < -0.5
    assert sum(c["contribution"] for c in contrib.values()) == pytest.approx(gap)
    assert contrib["answer_prefix"]["contribution"] == pytest.approx(gap)
    assert contrib["answer_prefix"]["ci_high"] < 0 and contrib["answer_prefix"]["p_value"] < 0.05
    for f, c in contrib.items():
        if f != "answer_prefix":
            assert c["contribution"] == pytest.approx(0.0, abs=1e-12)
    assert "answer_prefix kept -> dropped" in path_answer(path)


def test_path_names_the_cells_a_one_mistake_design_did_not_run():
    samples, cells = synthetic(seed=5)
    # drop the cell with both mistakes, as a one-mistake-at-a-time design does
    both = cells[(cells["answer_prefix"] == "dropped") & (cells["template_family"] == "llama2")]["cell_id"]
    cells = cells[~cells["cell_id"].isin(both)]
    samples = samples[~samples["cell_id"].isin(both)]
    # make the worst cell carry a metric change as well, so the path crosses a run cell and an unrun one
    res = measure(samples, cells, LISTED, Setting({"answer_prefix": "kept", "template_family": "own"}, 100, 2))
    res["worst"]["levels"] = {**res["worst"]["levels"], "template_family": "llama2"}
    path = best_to_worst(samples, cells, res, 100, 2)
    assert not path["complete"] and path["missing_cells"]
    assert all(c["answer_prefix"] == "dropped" and c["template_family"] == "llama2" for c in path["missing_cells"])
    assert "did not run" in path_answer(path)


def test_paired_difference_is_tighter_than_the_unpaired_spread():
    """Cells share their items, so the difference interval is narrower than either cell's own."""
    samples, cells = synthetic(drop_effect=0.2)
    res = measure(samples, cells, LISTED, Setting({"answer_prefix": "kept"}, 400, 3))
    r = res["rows"][0]
    assert (r["drop_high"] - r["drop_low"]) < (r["from_best_high"] - r["from_best_low"]) * 1.01 + 0.2
    best = res["best"]
    assert best["low"] <= best["score"] <= best["high"]


@pytest.mark.parametrize("reference, message", [
    ({"answer_prefix": "lost"}, "reference level 'lost' is not one of the levels kept, dropped"),
    ({"chat_template": True}, "'chat_template' is not a factor of this study"),
    ({"template_family": "own"}, "has one level"),
])
def test_bad_reference_is_one_line(reference, message):
    factors = {"answer_prefix": ["kept", "dropped"], "template_family": ["own"]}
    with pytest.raises(UserError, match=message):
        check_reference(reference, factors, "c.yaml: pitfalls.reference")


CONFIG = """study: p
models: {{m: {{source: embedded, embedded: qwen2.5-coder-0.5b-instruct-q4_k_m}}}}
ruler: {{tasks: [niah_single_1], n_items: 2}}
factors:
  model: [m]
  chat_template: [true]
  answer_prefix: [kept, dropped]
  template_family: [own, llama2]
  metric: [all_match, any_match]
pitfalls: {pitfalls}
"""


def test_cli_writes_the_table_and_refuses_a_bad_section(tmp_path):
    samples, cells = synthetic(n_items=20)
    samples.to_parquet(tmp_path / "samples.parquet")
    cells.to_parquet(tmp_path / "cells.parquet")
    good = write_config(tmp_path / "good.yaml", CONFIG.format(
        pitfalls="{reference: {answer_prefix: kept, template_family: own}, bootstrap: 200}"))
    res = run_cli("pitfalls", "--config", str(good), "--samples", str(tmp_path / "samples.parquet"),
                  "--cells", str(tmp_path / "cells.parquet"), "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(tmp_path / "out" / "pitfalls.csv")
    assert set(table["factor"]) == {"answer_prefix", "template_family"}
    details = json.loads((tmp_path / "out" / "pitfalls.json").read_text())
    assert details["bootstrap"] == 200 and "population" in details["interval"]
    assert details["answer"] in res.stdout
    bad = write_config(tmp_path / "bad.yaml", CONFIG.format(pitfalls="{reference: {answer_prefix: lost}}"))
    res = run_main("pitfalls", "--config", str(bad), "--samples", str(tmp_path / "samples.parquet"),
                  "--cells", str(tmp_path / "cells.parquet"), "--out", str(tmp_path / "bad-out"))
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "pitfalls.reference.answer_prefix" in res.stderr
    assert not (tmp_path / "bad-out").exists()


def test_four_items_never_make_an_effect():
    """Every one of 4 items (2 per task) drops by the same amount: every bootstrap resample gives the drop, so
    the interval is the exact one for agreeing items, which at 2 items per task reaches past zero; and the
    exact sign-flip test cannot go below 2/2^4 = 0.125. No effect is claimed. At 8 items both agree on one."""
    samples, cells = synthetic(n_items=4, drop_effect=1.0, seed=5)
    samples["score"] = 1.0
    samples.loc[samples["cell_id"].isin(cells.loc[cells["answer_prefix"] == "dropped", "cell_id"]), "score"] = 0.0
    res = measure(samples, cells, LISTED, Setting({"answer_prefix": "kept"}, 200, 0))
    r = res["rows"][0]
    assert r["marginal"] == -1.0 and r["marginal_low"] == -1.0 and r["marginal_high"] > 0
    assert r["n_items"] == 4 and r["p_value"] == pytest.approx(0.125)
    assert r["verdict"].startswith("indistinguishable from item noise at 4 items")
    # the same drop on 8 items is an effect (p = 2/256)
    samples, cells = synthetic(n_items=8, drop_effect=1.0, seed=5)
    samples["score"] = 1.0
    samples.loc[samples["cell_id"].isin(cells.loc[cells["answer_prefix"] == "dropped", "cell_id"]), "score"] = 0.0
    r = measure(samples, cells, LISTED, Setting({"answer_prefix": "kept"}, 200, 0))["rows"][0]
    assert r["p_value"] == pytest.approx(2 / 256) and r["verdict"].startswith("an effect")
    assert r["marginal_low"] == -1.0 < r["marginal_high"] < 0


def test_best_and_worst_cells_are_scored_on_the_whole_item_set():
    """A scoring factor that keeps a subset of the items (split: vt) must not make an easy subset the "best"
    cell: the answer prefix breaks only CWE items here, so from a VT-only best cell it would cost nothing.
    (The default study of dee4801 reported "answer_prefix=dropped: a change of +0.0" from a split=niah cell.)"""
    rng = np.random.default_rng(3)
    n = 20
    cwe_ok = rng.random(n) < 0.9
    broken = rng.random(n) < 0.8
    cells, rows = [], []
    for i, (ap, split) in enumerate(itertools.product(["kept", "dropped"], ["all", "vt"])):
        cid = f"c{i}"
        cells.append({"cell_id": cid, "answer_prefix": ap, "split": split, "status": "ok"})
        for j in range(n):
            rows.append({"cell_id": cid, "task": "vt", "item_id": str(j), "score": 1.0})
            if split == "all":
                y = float(cwe_ok[j] and not (ap == "dropped" and broken[j]))
                rows.append({"cell_id": cid, "task": "cwe", "item_id": str(j), "score": y})
    samples, cells = pd.DataFrame(rows), pd.DataFrame(cells)
    res = measure(samples, cells, ["answer_prefix", "split"], Setting({"answer_prefix": "kept"}, 300, 1))
    assert res["best"]["levels"]["split"] == "all" and res["worst"]["levels"]["split"] == "all"
    row = next(r for r in res["rows"] if r["factor"] == "answer_prefix")
    assert row["drop"] < -0.2 and row["drop_high"] < 0
