"""The one item bootstrap, and the intervals built on it.

Population: every interval here is about the *same protocol cells measured on infinitely many items
drawn from the same generator* (the same tasks, the same lengths): items are the resampled unit, tasks
are strata (each task keeps its item count), and items are resampled *jointly* across cells, so a
difference between two cells on shared items is a paired comparison.

- ``StratifiedResampler``: multinomial counts of units within strata (one draw applies to every cell).
- ``item_bootstrap_means``: replicates of each row's mean of a cells x items matrix.
- ``ItemBootstrap``: cell scores from a samples table (task mean or item mean, as scoring does) and
  their replicates; ``estimate(cells)`` is the equal-weight mean of those cells with its interval.
  The report and the claims verdicts build it over the same table with the same seed, so they print
  the same interval for the same reading.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

LEVEL = 0.95
ITEM_SEP = "\x1f"


class StratifiedResampler:
    """Bootstrap counts of ``n`` units resampled with replacement within their stratum."""

    def __init__(self, strata: np.ndarray):
        strata = np.asarray(strata, dtype=np.int64)
        self.order = np.argsort(strata, kind="stable")
        sorted_strata = strata[self.order]
        counts = np.bincount(sorted_strata) if len(strata) else np.zeros(0, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else np.zeros(0)
        self.start = starts[sorted_strata].astype(np.float64)
        self.size = counts[sorted_strata].astype(np.float64)
        self.n = len(strata)

    def counts(self, rng: np.random.Generator) -> np.ndarray:
        """One replicate: how often each unit is drawn (each stratum keeps its size)."""
        pick = (self.start + np.floor(rng.random(self.n) * self.size)).astype(np.int64)
        return np.bincount(self.order[pick], minlength=self.n).astype(np.float64)

    def many(self, rng: np.random.Generator, b: int) -> np.ndarray:
        out = np.empty((b, self.n))
        for r in range(b):
            out[r] = self.counts(rng)
        return out


def presence_strata(present: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Stratum of each item (column): the set of cells (rows) that have it, within its group."""
    present = np.asarray(present, dtype=bool)
    keys = present.T
    if groups is not None:
        g = pd.factorize(pd.Series(groups))[0]
        keys = np.column_stack([g, keys])
    if keys.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def item_bootstrap_means(values: np.ndarray, n_boot: int, seed: int, groups: np.ndarray | None = None,
                         chunk_elems: int = 4_000_000) -> np.ndarray:
    """Bootstrap replicates (n_boot x cells) of each cell's mean over its items.

    ``values``: cells x items, NaN where a cell lacks an item. Items are resampled jointly across cells,
    within strata of the same presence pattern (and the same ``groups`` entry, e.g. the task), so each
    cell keeps its item count."""
    values = np.asarray(values, dtype=float)
    n_cells, n_items = values.shape
    out = np.full((n_boot, n_cells), np.nan)
    if n_boot == 0 or n_items == 0:
        return out
    present = ~np.isnan(values)
    filled = np.where(present, values, 0.0)
    res = StratifiedResampler(presence_strata(present, groups))
    rng = np.random.default_rng(seed)
    step = max(1, chunk_elems // max(1, n_items))
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        w = res.many(rng, b)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + b] = (w @ filled.T) / (w @ present.T.astype(float))
    return out


def percentile_interval(reps: np.ndarray, level: float = LEVEL, axis: int = 0):
    a = (1.0 - level) / 2.0
    with np.errstate(all="ignore"):
        lo = np.nanquantile(reps, a, axis=axis)
        hi = np.nanquantile(reps, 1.0 - a, axis=axis)
    return lo, hi


def paired_permutation_p(diffs, n_resamples: int = 9999, seed: int = 0) -> float:
    """Two-sided p-value of "the paired differences are centred on zero": the sign-flip permutation test of
    their mean (``scipy.stats.permutation_test``; exact, all 2^n sign patterns, when 2^n <= n_resamples).
    With n items no p-value is below 2 / 2^n: four items can never show an effect at the 5% level."""
    from scipy.stats import permutation_test

    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) == 0 or np.all(d == 0):
        return 1.0
    res = permutation_test((d,), np.mean, permutation_type="samples", n_resamples=n_resamples,
                           alternative="two-sided", vectorized=True, random_state=np.random.default_rng(seed))
    return float(res.pvalue)


def item_scores(samples: pd.DataFrame) -> pd.DataFrame:
    """The per-item score matrix (0-1 scale): one row per cell, one column per task-qualified item."""
    task = samples["task"].astype(str) if "task" in samples.columns else pd.Series("all", index=samples.index)
    s = samples.assign(_y=fraction_scores(samples), _cell=samples["cell_id"].astype(str),
                       _item=task + ITEM_SEP + samples["item_id"].astype(str))
    return s.pivot_table(index="_cell", columns="_item", values="_y", aggfunc="mean")


def fraction_scores(df: pd.DataFrame, col: str = "score") -> pd.Series:
    """Scores on the 0-1 scale (rows whose ``scale`` is percent are divided by 100)."""
    s = pd.to_numeric(df[col], errors="coerce").astype(float)
    if "scale" in df.columns:
        s = s.where(df["scale"].astype(str) != "percent", s / 100.0)
    return s


@dataclass
class Estimate:
    value: float
    low: float | None = None
    high: float | None = None

    @property
    def has_ci(self) -> bool:
        return self.low is not None and self.high is not None


class ItemBootstrap:
    """Cell scores (0-1 scale) from a samples table and their item-bootstrap replicates.

    ``samples`` needs ``cell_id``, ``item_id``, ``score`` (``task`` and ``scale`` are used when present).
    A cell's value is aggregated as the scoring step does: ``task_mean`` (the mean of per-task means,
    RULER's convention) or ``item_mean`` (pooled). ``aggregation`` maps cell ids to one of these (cells
    not named take ``default``). Row 0 of the replicate matrix is the point estimate.
    """

    def __init__(self, samples: pd.DataFrame, n_boot: int, seed: int, *, aggregation: dict | None = None,
                 default: str = "task_mean", level: float = LEVEL, cell_ids=None):
        self.n_boot = int(n_boot)
        self.seed = int(seed)
        self.level = float(level)
        if not {"cell_id", "item_id", "score"} <= set(samples.columns):
            samples = pd.DataFrame(columns=["cell_id", "item_id", "score", "task"])
        s = samples
        if cell_ids is not None:
            s = s[s["cell_id"].astype(str).isin({str(c) for c in cell_ids})]
        task = s["task"].astype(str) if "task" in s.columns else pd.Series("all", index=s.index)
        s = s.assign(_y=fraction_scores(s), _cell=s["cell_id"].astype(str), _task=task,
                     _item=task + ITEM_SEP + s["item_id"].astype(str))
        s = s[s["_y"].notna()]
        self.cells = sorted(set(s["_cell"]))
        items = sorted(set(s["_item"]))
        mat = s.pivot_table(index="_cell", columns="_item", values="_y", aggfunc="mean").reindex(
            index=self.cells, columns=items)
        S = mat.to_numpy(float)
        valid = ~np.isnan(S)
        S0 = np.where(valid, S, 0.0)
        item_task = np.array([i.split(ITEM_SEP, 1)[0] for i in items])
        n = len(items)
        W = np.ones((self.n_boot + 1, n))
        if self.n_boot > 0 and n > 0:
            res = StratifiedResampler(presence_strata(valid, item_task))
            W[1:] = res.many(np.random.default_rng(self.seed), self.n_boot)
        tasks = sorted(set(item_task))
        C = len(self.cells)
        num_t = np.zeros((len(tasks), self.n_boot + 1, C))
        den_t = np.zeros((len(tasks), self.n_boot + 1, C))
        for k, t in enumerate(tasks):
            m = item_task == t
            num_t[k] = W[:, m] @ S0[:, m].T
            den_t[k] = W[:, m] @ valid[:, m].T.astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            item_mean = num_t.sum(0) / den_t.sum(0)
            per_task = np.where(den_t > 0, num_t / np.where(den_t > 0, den_t, 1.0), np.nan)
            task_mean = np.nanmean(per_task, axis=0) if len(tasks) else item_mean
        aggregation = aggregation or {}
        use_task = np.array([aggregation.get(c, default) == "task_mean" for c in self.cells], dtype=bool)
        self.reps = np.where(use_task[None, :], task_mean, item_mean)
        self._S, self._valid, self._task, self._use_task = S0, valid, item_task, use_task
        self.pos = {c: i for i, c in enumerate(self.cells)}
        self.n_items = dict(zip(self.cells, valid.sum(axis=1).tolist())) if C else {}

    @classmethod
    def from_tables(cls, samples: pd.DataFrame, cells: pd.DataFrame | None, n_boot: int, seed: int,
                    level: float = LEVEL, default: str = "task_mean") -> "ItemBootstrap":
        """The bootstrap every consumer builds the same way (report, claims verdicts, explain): over the
        whole samples table, each cell aggregated as its ``aggregation`` column says; without that column
        (aggregation held fixed) every cell takes ``default``, the study's fixed level.
        Same tables, same ``n_boot`` and ``seed`` -> identical intervals for the same reading."""
        agg = {}
        if cells is not None and "aggregation" in cells.columns:
            agg = dict(zip(cells["cell_id"].astype(str), cells["aggregation"].astype(str)))
        return cls(samples, n_boot, seed, aggregation=agg, default=default, level=level)

    def has(self, cell_ids) -> bool:
        return all(str(c) in self.pos for c in cell_ids)

    def replicates(self, cell_ids) -> np.ndarray:
        """Point (row 0) and replicates of the equal-weight mean of the cells (NaN if none is known)."""
        cols = [self.pos[str(c)] for c in cell_ids if str(c) in self.pos]
        if not cols:
            return np.full(self.n_boot + 1, np.nan)
        return np.nanmean(self.reps[:, cols], axis=1)

    def _interval(self, r: np.ndarray, w: np.ndarray | None = None) -> Estimate:
        """Row 0 as the point, the percentile interval of the finite replicates (none with < 2 replicates);
        where every replicate is the same value, the exact interval of :func:`agreeing_items_interval`."""
        if self.n_boot > 1:
            b = r[1:][np.isfinite(r[1:])]
            if len(b):
                if w is not None and np.ptp(b) <= 1e-12 and np.isfinite(r[0]):
                    exact = self._agreeing(w)
                    if exact is not None:
                        return Estimate(float(r[0]), *exact)
                lo, hi = percentile_interval(b, self.level)
                return Estimate(float(r[0]), float(lo), float(hi))
        return Estimate(float(r[0]))

    def _weights(self, cell_ids) -> np.ndarray:
        w = np.zeros(len(self.cells))
        cols = [self.pos[str(c)] for c in cell_ids if str(c) in self.pos]
        for c in cols:
            w[c] += 1.0 / len(cols)
        return w

    def _agreeing(self, w: np.ndarray) -> tuple[float, float] | None:
        """The reading sum_c w_c * cell_c when, in every task, all items give it the same value."""
        cols = np.flatnonzero(w)
        valid, use_task = self._valid[cols], self._use_task[cols]
        if not len(cols) or not (valid == valid[0]).all() or not (use_task == use_task[0]).all():
            return None  # cells on different item sets or aggregations: keep the bootstrap's interval
        d = w[cols] @ self._S[cols][:, valid[0]]
        task = self._task[valid[0]]
        groups = [task == t for t in sorted(set(task))]
        if any(np.ptp(d[g]) > 1e-9 for g in groups):
            return None
        n = np.array([g.sum() for g in groups])
        share = np.full(len(n), 1.0 / len(n)) if use_task[0] else n / n.sum()
        return agreeing_items_interval(np.array([d[g][0] for g in groups]), n, share,
                                       float(w[w < 0].sum()), float(w[w > 0].sum()), self.level)

    def estimate(self, cell_ids) -> Estimate:
        return self._interval(self.replicates(cell_ids), self._weights(cell_ids))

    def difference(self, cells_a, cells_b) -> Estimate:
        """Paired difference mean(cells_b) - mean(cells_a) on the same resampled items."""
        return self._interval(self.replicates(cells_b) - self.replicates(cells_a),
                              self._weights(cells_b) - self._weights(cells_a))


def agreeing_items_interval(values: np.ndarray, n: np.ndarray, share: np.ndarray, lo: float, hi: float,
                            level: float = LEVEL) -> tuple[float, float]:
    """Exact, distribution-free interval for a reading whose items all agree within each task.

    When every item of task t gives the same value v_t (e.g. a dropped answer prefix breaks every variable-
    tracking item), every bootstrap resample gives the same number and a percentile interval has zero width,
    whatever the number of items. Population: the same cells on infinitely many items of each task; a per-item
    value lies in [lo, hi] (scores on the 0-1 scale: the sums of the negative and of the positive weights).
    If a fraction p_t of task t's items take the value v_t, the task mean lies within (1 - p_t)(hi - lo) of
    v_t, and the observed agreement has probability prod_t p_t^n_t. Half of 1 - level goes to each case:

    * every v_t at an end of the range (all right, all wrong, every item flipped): the confidence set is the
      p with prod_t p_t^n_t >= c, c = (1 - level) / 2 / 2^T (one c per pattern of ends); the bound is the
      furthest reading over that set (the optimum has p_t proportional to n_t / share_t, found by bisection);
    * some v_t inside the range (partial scores): each task's bound separately, p_t >= q_t with q_t^n_t (an
      end) or q_t^(n_t - 1) (any of many inner values) = (1 - level) / 2 / (3 T), and the share-weighted sum.

    One item per task with an inner value gives the whole range. Conservative by construction; coverage
    checked by simulation in tests/test_stats_exact.py."""
    values, n, share = (np.asarray(x, dtype=float) for x in (values, n, share))
    alpha, T, R = 1.0 - level, len(n), hi - lo
    base = float(share @ values)
    at_lo, at_hi = np.abs(values - lo) < 1e-12, np.abs(values - hi) < 1e-12
    if (at_lo | at_hi).all():
        c = alpha / 2 / 2 ** T
        return base - R * _slack(share[at_hi], n[at_hi], c), base + R * _slack(share[at_lo], n[at_lo], c)
    a = alpha / 2 / (3 * T)
    power = np.where(at_lo | at_hi, n, n - 1)
    q = np.where(power >= 1, a ** (1.0 / np.maximum(power, 1)), 0.0)
    return float(share @ (values - (1 - q) * (values - lo))), float(share @ (values + (1 - q) * (hi - values)))


def _slack(share: np.ndarray, n: np.ndarray, c: float) -> float:
    """max sum_t share_t (1 - p_t) over 0 < p_t <= 1 with sum_t n_t log p_t >= log c."""
    if not len(n) or not (share > 0).any():
        return 0.0

    def p_of(log_lam: float) -> np.ndarray:
        return np.minimum(1.0, np.exp(log_lam) * n / np.maximum(share, 1e-300))

    lo_l, hi_l = -700.0, 700.0
    for _ in range(200):  # sum n log p rises with lambda; find where it meets log c
        mid = (lo_l + hi_l) / 2
        if float(n @ np.log(p_of(mid))) < np.log(c):
            lo_l = mid
        else:
            hi_l = mid
    return float(share @ (1 - p_of(hi_l)))
