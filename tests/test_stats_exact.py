"""The exact interval of ItemBootstrap where every resample agrees (each task's items all give one value):
known answers, and its coverage checked by simulation over populations that make agreement likely."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reprogrid.stats import ItemBootstrap, agreeing_items_interval


def samples(n: int, vt_drop: bool = True) -> pd.DataFrame:
    """Two cells on the same n VT and n CWE items: `ref` right everywhere; `mistake` loses every VT item."""
    rows = []
    for cell in ("ref", "mistake"):
        for task in ("vt", "cwe"):
            for i in range(n):
                y = 0.0 if (cell == "mistake" and task == "vt" and vt_drop) else 1.0
                rows.append({"cell_id": cell, "task": task, "item_id": str(i), "score": y})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n", [2, 20])
def test_agreeing_items_no_longer_give_a_zero_width_interval(n):
    boot = ItemBootstrap(samples(n), 200, 0)
    d = boot.difference(["ref"], ["mistake"])
    assert d.value == pytest.approx(-0.5)
    assert d.low < d.value < d.high  # the percentile interval was (-0.5, -0.5)
    assert d.low >= -1 and d.high <= 1
    ref = boot.estimate(["ref"])
    assert ref.value == 1 and ref.low < 1 and ref.high == 1
    if n == 2:  # two items per task say little: the interval reaches zero
        assert d.high > 0
    else:  # twenty items that all break: an effect, and the bound follows the formula
        assert d.high < 0
        a = 0.05 / 2 / 6
        q_vt, q_cwe = a ** (1 / 20), a ** (1 / 19)  # VT at the end of [-1, 1]; CWE (0) inside it
        assert d.low == pytest.approx((-1 - (1 - q_cwe)) / 2)
        assert d.high == pytest.approx((-1 + 2 * (1 - q_vt) + (1 - q_cwe)) / 2)
        # both tasks at an end (every item right): the joint bound, p = (0.05 / 2 / 4)^(1 / 40) on both
        assert ref.low == pytest.approx((0.05 / 8) ** (1 / 40))


def test_a_reading_with_item_spread_keeps_the_bootstrap_interval():
    s = samples(20)
    s.loc[(s.cell_id == "mistake") & (s.task == "vt") & (s.item_id == "3"), "score"] = 1.0
    boot = ItemBootstrap(s, 400, 0)
    d = boot.difference(["ref"], ["mistake"])
    reps = boot.replicates(["mistake"]) - boot.replicates(["ref"])
    assert d.low == pytest.approx(np.quantile(reps[1:], 0.025)) and d.high == pytest.approx(np.quantile(reps[1:], 0.975))


@pytest.mark.parametrize("tasks", [1, 2])
def test_coverage_at_the_populations_where_the_exact_branch_is_closest_to_missing(tasks):
    """Items flip either way (d = -1 with probability p, else +1, in every task): when all n items of every
    task agree on -1, the interval's top is -1 + 2(1 - q) with q^(n T) = 0.025 / 2^T, which misses the mean
    1 - 2p exactly when p < q; the chance of that is p^(n T), largest just below q (and the same for +1).
    The branch spends close to, never more than, its share of the 5%."""
    rng = np.random.default_rng(11)
    worst = 0.0
    for n in (2, 3, 5, 8):
        q = (0.05 / 2 / 2 ** tasks) ** (1 / (n * tasks))  # the joint bound's p at which a miss begins
        for p in sorted({*np.linspace(0.3, 0.99, 8), q * 0.999, q * 0.99, q * 0.95, q * 1.01}):
            mu = 1 - 2 * p
            sims = 20000
            down = rng.random((sims, tasks, n)) < p
            agree_down = down.all(axis=(1, 2))
            agree_up = (~down).all(axis=(1, 2))
            miss = 0
            for agree, v in ((agree_down, -1.0), (agree_up, 1.0)):
                low, high = agreeing_items_interval(np.full(tasks, v), np.full(tasks, n), np.full(tasks, 1 / tasks),
                                                    -1.0, 1.0)
                if not low <= mu <= high:
                    miss += int(agree.sum())
            worst = max(worst, miss / sims)
    assert worst <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 20000), worst
    assert worst > 0.4 * 0.025 / 2 ** tasks, worst  # it reaches the branch's edge (0.025 / 2^T), so it can fail
