"""Predicted (unrun) cells of a fractional design in `explain` and the claims mapping: known answers."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from reprogrid.attribution.incomplete import estimate
from reprogrid.claims import load_claims, map_claims_to_cells, verdicts
from reprogrid.cli import main
from reprogrid.designs.predicted import BASIS, Lookup, with_predicted
from reprogrid.explain import explain

EFFECT = {"a": 0.2, "b": 0.05, "c": -0.03}
LOW = {"a": "a0", "b": "b0", "c": "c0"}
HIGH = {"a": "a1", "b": "b1", "c": "c1"}


def truth(a, b, c) -> float:
    return 0.3 + EFFECT["a"] * (a == "a1") + EFFECT["b"] * (b == "b1") + EFFECT["c"] * (c == "c1")


def full_cells() -> pd.DataFrame:
    rows = [{"cell_id": f"{a}{b}{c}", "a": a, "b": b, "c": c, "d": "d0", "score": truth(a, b, c), "status": "ok",
             "n_items": 10} for a, b, c in itertools.product(("a0", "a1"), ("b0", "b1"), ("c0", "c1"))]
    return pd.DataFrame(rows)


def predicted_table(cells: pd.DataFrame, unrun: list[tuple], estimable: bool = True) -> pd.DataFrame:
    """`reprogrid estimate`'s predicted_cells.csv layout: every cell of the full grid of the varying factors."""
    rows = []
    for a, b, c in itertools.product(("a0", "a1"), ("b0", "b1"), ("c0", "c1")):
        run = (a, b, c) not in unrun
        m = truth(a, b, c)
        rows.append({"a": a, "b": b, "c": c, "n": 10 if run else 0, "measured": m if run else np.nan,
                     "predicted": m, "ci_low": m - 0.04, "ci_high": m + 0.04,
                     "status": "measured" if run else "predicted", "estimable": estimable})
    return pd.DataFrame(rows)


UNRUN = [("a1", "b1", "c0"), ("a0", "b0", "c1")]


def run_cells() -> pd.DataFrame:
    cells = full_cells()
    drop = cells[["a", "b", "c"]].apply(tuple, axis=1).isin(UNRUN)
    return cells[~drop].reset_index(drop=True)


def test_explain_takes_missing_path_cells_from_estimable_predictions_and_says_so():
    cells = run_cells()
    without = explain(cells, "score", LOW, HIGH, factors=["a", "b", "c", "d"])
    assert len(without.missing_cells) == 2 and without.contributions.empty
    res = explain(cells, "score", LOW, HIGH, factors=["a", "b", "c", "d"], predicted=predicted_table(cells, UNRUN))
    assert res.complete
    contrib = dict(zip(res.contributions["factor"], res.contributions["contribution"]))
    assert contrib == pytest.approx(EFFECT, abs=1e-12)  # the predictions are the true means here
    got = {(c["a"], c["b"], c["c"]) for c in res.predicted_cells}
    assert got == set(UNRUN)
    assert res.summary()["basis"] == "partly predicted" and len(res.summary()["predicted_cells"]) == 2
    full = explain(full_cells(), "score", LOW, HIGH, factors=["a", "b", "c", "d"])
    assert full.summary()["basis"] == "measured" and full.predicted_cells == []


def test_predictions_that_are_not_estimable_do_not_stand_in():
    cells = run_cells()
    res = explain(cells, "score", LOW, HIGH, factors=["a", "b", "c", "d"],
                  predicted=predicted_table(cells, UNRUN, estimable=False))
    assert len(res.missing_cells) == 2 and res.predicted_cells == []


def samples_of(cells: pd.DataFrame, n_items: int, rng) -> pd.DataFrame:
    rows = []
    for r in cells.itertuples():
        for i in range(n_items):
            rows.append({"cell_id": r.cell_id, "a": r.a, "b": r.b, "c": r.c, "d": r.d, "task": "t",
                         "item_id": i, "score": r.score + rng.normal(0, 0.05)})
    return pd.DataFrame(rows)


def test_explain_on_items_with_a_cell_predicted_by_estimate():
    """Items of 7 of the 8 cells (enough for main effects and every two-way interaction); `estimate` predicts
    the eighth, a1b1c1, the high end of the path: the decomposition recovers the true effects, with bootstrap
    intervals and no paired test (the predicted cell has no items)."""
    rng = np.random.default_rng(5)
    cells = full_cells()
    run = cells[cells["cell_id"] != "a1b1c1"]
    samples = samples_of(run, 40, rng)
    pred = estimate(samples, "score", ["a", "b", "c"], draws=0, noise_draws=0).predicted
    unrun = pred[pred["status"] == "predicted"]
    assert len(unrun) == 1 and unrun["estimable"].all()
    res = explain(samples, "score", LOW, HIGH, item="item_id", bootstrap=300, factors=["a", "b", "c", "d"],
                  predicted=pred)
    assert res.complete and [(c["a"], c["b"], c["c"]) for c in res.predicted_cells] == [("a1", "b1", "c1")]
    t = res.contributions.set_index("factor")
    for f, e in EFFECT.items():
        assert t.loc[f, "contribution"] == pytest.approx(e, abs=0.03)
        assert t.loc[f, "ci_low"] < e < t.loc[f, "ci_high"]
    assert res.gap_test == {} and "p_value" not in t.columns  # no items in the predicted cell: no paired test
    measured = explain(samples, "score", LOW, {"a": "a1", "b": "b1", "c": "c0"}, item="item_id", bootstrap=50,
                       factors=["a", "b", "c", "d"], predicted=pred)
    assert measured.predicted_cells == [] and "p_value" in measured.contributions.columns


def test_explain_cli_reads_predicted_cells_and_labels_them(tmp_path, capsys):
    cells = run_cells()
    cells.to_csv(tmp_path / "cells.csv", index=False)
    predicted_table(cells, UNRUN).to_csv(tmp_path / "predicted_cells.csv", index=False)
    out = tmp_path / "out"
    rc = main(["explain", str(tmp_path / "cells.csv"), "--response", "score", "--low", "a=a0,b=b0,c=c0",
               "--high", "a=a1,b=b1,c=c1", "--factors", "a,b,c,d", "--predicted", str(tmp_path / "predicted_cells.csv"),
               "--out", str(out)])
    assert rc == 0
    io = capsys.readouterr()
    assert "predicted (unrun) cell on the path: a=a1, b=b1, c=c0, d=d0" in io.err
    assert "2 of the path's cells predicted, not measured" in io.out
    table = pd.read_csv(out / "contributions.csv")
    assert set(table["basis"]) == {"partly predicted"}
    assert json.loads((out / "summary.json").read_text())["basis"] == "partly predicted"
    rc = main(["explain", str(tmp_path / "cells.csv"), "--response", "score", "--low", "a=a0,b=b0,c=c0",
               "--high", "a=a1,b=b1,c=c1", "--factors", "a,b,c,d", "--predicted", str(tmp_path / "nope.csv"),
               "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --predicted") and "nope.csv" in err[0]


def test_with_predicted_adds_unrun_cells_labelled_with_their_interval():
    cells = run_cells()
    out = with_predicted(cells, predicted_table(cells, UNRUN), factor_names=["a", "b", "c", "d"])
    assert len(out) == 8 and (out[BASIS] == "measured").sum() == 6
    added = out[out[BASIS] == "predicted"]
    assert set(added["d"]) == {"d0"} and set(added["status"]) == {"ok"}  # the fixed factor's single level
    assert added["cell_id"].str.startswith("predicted ").all() and added["cell_id"].is_unique
    assert added["score"].tolist() == pytest.approx([truth(a, b, c) for a, b, c in zip(added.a, added.b, added.c)])
    assert (added["predicted_high"] - added["predicted_low"]).tolist() == pytest.approx([0.08, 0.08])
    assert Lookup(predicted_table(cells, UNRUN)).get({"a": "a0", "b": "b0", "c": "c0", "d": "d0"}) is None  # run


REAL = {"a": ("answer_prefix", {"a0": "dropped", "a1": "kept"}), "b": ("decoding", {"b0": "sample", "b1": "greedy"}),
        "c": ("max_gen_toks", {"c0": 0, "c1": 12})}


def real(df: pd.DataFrame) -> pd.DataFrame:
    """The synthetic grid on catalogue factors (claims state their protocol in the catalogue's terms)."""
    out = df.copy()
    for f, (name, levels) in REAL.items():
        out[f] = out[f].map(levels)
    return out.rename(columns={f: name for f, (name, _) in REAL.items()})


def claim(cid, value, levels):
    return {"id": cid, "source": {"paper": "A paper", "arxiv": "2501.00001"}, "model": "m", "benchmark": "ruler",
            "value": value, "scale": "percent",
            "protocol": {REAL[f][0]: REAL[f][1][lv] for f, lv in zip("abc", levels)}}


def test_claims_read_predicted_cells_and_label_them(tmp_path):
    """Both claims' protocols are unrun cells: without predictions the grid cannot answer; with them each claim
    is read from a predicted cell (labelled), the interval is the prediction's, and the pairwise path uses them."""
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"claims": [claim("low", 30.0, UNRUN[1]), claim("high", 55.0, UNRUN[0])]},
                                   sort_keys=False))
    claims = load_claims([path])
    cells = real(run_cells()).assign(model="m")
    pred = real(predicted_table(run_cells(), UNRUN))
    factors = ["model", "answer_prefix", "decoding", "max_gen_toks"]
    bare = map_claims_to_cells(claims, cells, factors)
    assert bare["n_cells"].tolist() == [0, 0] and bare["n_predicted"].tolist() == [0, 0]
    table = map_claims_to_cells(claims, with_predicted(cells, pred), factors)
    assert table["n_cells"].tolist() == [1, 1] and table["n_predicted"].tolist() == [1, 1]
    assert table["grid_mean"].tolist() == pytest.approx([truth(*UNRUN[1]), truth(*UNRUN[0])])
    v = verdicts(claims, cells, None, factors, ("low", "high"), bootstrap=0, predicted=pred)
    ex = {e["claim"]["id"]: e for e in v["explanations"]}
    for cid in ("low", "high"):
        assert ex[cid]["best"]["predicted"] == 1 and "predicted, not run" in ex[cid]["summary"]
        lo, hi = ex[cid]["best"]["ci"]
        assert hi - lo == pytest.approx(0.08, abs=1e-9)  # the prediction's own interval
    pw = v["pairwise"]
    assert pw["available"] and pw["basis"] == "partly predicted" and len(pw["predicted_cells"]) == 2
    contrib = {r["factor"]: r["contribution"] for r in pw["contributions"]}
    # low = (a0, b0, c1), high = (a1, b1, c0): c goes from c1 to c0
    assert contrib == pytest.approx({"answer_prefix": 0.2, "decoding": 0.05, "max_gen_toks": 0.03}, abs=1e-12)
