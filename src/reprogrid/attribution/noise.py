"""The noise floor: the Shapley share a factor gets when its labels are permuted (restricted permutation)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from reprogrid.attribution.prepare import Data, combine_codes


class Permuter:
    """Permutes the labels of factor j within the cells of the other factors.

    Where a unit (item) occurs at several levels of j inside such a cell (crossed design), its entries
    are permuted among its own levels; units seen at one level only there are shuffled between units
    (nested design, or rows without an item column). Permuting labels among entries is the same as
    permuting the entries' sufficient statistics among fixed cell slots, which is what is done here.
    """

    def __init__(self, data: Data, j: int):
        codes = data.cell_codes
        C, k = codes.shape
        self.n_cells = C
        cell_stratum = combine_codes([codes[:, i] for i in range(k) if i != j], C)
        e_stratum = cell_stratum[data.e_cell]
        block, _ = pd.factorize(e_stratum * np.int64(data.n_units) + data.e_unit)
        e_size = np.bincount(block)[block]
        # crossed: blocks of m >= 2 entries (one unit, several levels of j, same other factors)
        self.crossed: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []
        for m in np.unique(e_size[e_size > 1]):
            m = int(m)
            idx = np.nonzero(e_size == m)[0]
            idx = idx[np.argsort(block[idx], kind="stable")].reshape(-1, m)
            table = np.array(list(itertools.permutations(range(m)))) if m <= 6 else None
            self.crossed.append((data.e_cell[idx], data.e_n[idx], data.e_s[idx], table))
        # pooled: entries alone in their block, shuffled within their stratum; kept sorted by
        # (stratum, cell) so that the cell sums of a shuffled segment are sums of contiguous chunks
        pooled = np.nonzero(e_size == 1)[0]
        pooled = pooled[np.lexsort((data.e_cell[pooled], e_stratum[pooled]))]
        p_cell = data.e_cell[pooled]
        self.p_n = data.e_n[pooled]
        self.p_s = data.e_s[pooled]
        self.p_unit_rows = bool(len(pooled)) and bool(np.all(self.p_n == 1.0))
        chunk = np.flatnonzero(np.diff(p_cell)) + 1
        self.chunk_starts = np.concatenate([[0], chunk]).astype(np.int64) if len(pooled) else chunk
        self.chunk_cells = p_cell[self.chunk_starts]
        p_stratum = e_stratum[pooled]
        bounds = np.flatnonzero(np.diff(p_stratum)) + 1
        starts = np.concatenate([[0], bounds]).astype(np.int64)
        ends = np.concatenate([bounds, [len(pooled)]]).astype(np.int64)
        keep = ends - starts > 1
        self.segments = list(zip(starts[keep].tolist(), ends[keep].tolist()))
        self.n_pooled = len(pooled)
        self.units = _NestedUnits.build(data, j, pooled, p_stratum, cell_stratum)
        self.kind = ("within items" if self.crossed and not self.segments else
                     "between units" if self.segments and not self.crossed else
                     "mixed" if self.crossed else "none (no two entries to exchange)")
        if self.units is not None:
            self.kind += " (whole units)"

    def aggregate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Cell counts and sums after one random relabelling."""
        C = self.n_cells
        n = np.zeros(C)
        s = np.zeros(C)
        for cells, bn, bs, table in self.crossed:
            nb, m = cells.shape
            if m == 2:
                swap = rng.random(nb) < 0.5
                new = np.where(swap[:, None], cells[:, ::-1], cells)
            elif table is not None:
                new = np.take_along_axis(cells, table[rng.integers(0, len(table), nb)], axis=1)
            else:
                new = np.take_along_axis(cells, np.argsort(rng.random((nb, m)), axis=1), axis=1)
            new = new.ravel()
            n += np.bincount(new, weights=bn.ravel(), minlength=C)
            s += np.bincount(new, weights=bs.ravel(), minlength=C)
        if self.units is not None:
            cells = self.units.relabel(rng)
            n += np.bincount(cells, weights=self.p_n, minlength=C)
            s += np.bincount(cells, weights=self.p_s, minlength=C)
        elif self.n_pooled:
            if self.p_unit_rows:  # one row per entry: the counts stay, only the values move
                vals = self.p_s.copy()
                for a, b in self.segments:
                    vals[a:b] = rng.permutation(vals[a:b])
                s[self.chunk_cells] += np.add.reduceat(vals, self.chunk_starts)
                n[self.chunk_cells] += np.add.reduceat(self.p_n, self.chunk_starts)
            else:
                perm = np.arange(self.n_pooled)
                for a, b in self.segments:
                    perm[a:b] = rng.permutation(perm[a:b])
                n[self.chunk_cells] += np.add.reduceat(self.p_n[perm], self.chunk_starts)
                s[self.chunk_cells] += np.add.reduceat(self.p_s[perm], self.chunk_starts)
        return n, s



class _NestedUnits:
    """Units (items) nested in factor j and seen in several cells of the other factors: their labels
    are permuted as whole units (one permutation of units, among units seen in the same cells of the
    other factors, applied to all their entries), so that an item's effect stays shared by its cells.
    Shuffling their entries cell by cell instead would break that sharing and let a null factor
    through far too often (measured: 33% instead of 5% with 40 items nested in a null factor)."""

    @classmethod
    def build(cls, data: Data, j: int, pooled: np.ndarray, p_stratum: np.ndarray, cell_stratum: np.ndarray):
        if not len(pooled):
            return None
        unit = data.e_unit[pooled]
        if len(np.unique(unit)) == len(unit):
            return None  # every unit in one cell of the other factors: entry shuffles are unit shuffles
        lev = data.cell_codes[data.e_cell[pooled], j]
        uu, u_idx = np.unique(unit, return_inverse=True)
        lo = np.full(len(uu), np.iinfo(np.int64).max)
        hi = np.full(len(uu), -1)
        np.minimum.at(lo, u_idx, lev)
        np.maximum.at(hi, u_idx, lev)
        if np.any(lo != hi):
            return None  # a unit at several levels in different cells: keep the entry shuffle
        order = np.lexsort((p_stratum, u_idx))
        sig = pd.Series(p_stratum[order].astype(str)).groupby(u_idx[order]).agg(",".join)
        self = cls()
        self.group = pd.factorize(sig.to_numpy())[0].astype(np.int64)
        self.by_group = np.argsort(self.group, kind="stable")
        self.level_u = lo
        self.u_idx = u_idx
        self.stratum = p_stratum
        L = int(data.n_levels[j])
        self.cell_of = np.full((int(cell_stratum.max()) + 1, L), -1, dtype=np.int64)
        self.cell_of[cell_stratum, data.cell_codes[:, j]] = np.arange(len(cell_stratum))
        return self

    def relabel(self, rng: np.random.Generator) -> np.ndarray:
        """The cell of every pooled entry after one permutation of the units' levels."""
        perm = np.empty(len(self.group), dtype=np.int64)
        perm[self.by_group] = np.lexsort((rng.random(len(self.group)), self.group))
        return self.cell_of[self.stratum, self.level_u[perm][self.u_idx]]


NOISE_QUANTILE = 0.95
DEFAULT_NOISE_PERMUTATIONS = 100
METHOD = ("restricted permutation of the factor's labels within the cells of the other factors "
          "(within items where items are crossed with the factor, between items otherwise); "
          "noise_floor = the k-th smallest of the B permuted Shapley shares, k = ceil(quantile * (B + 1)) "
          "(the largest when k > B), so that a factor without effect clears it with probability at most "
          "1 - quantile (the observed share and the B permuted ones are exchangeable under the null)")


def rank_floor(null: np.ndarray, quantile: float = NOISE_QUANTILE) -> float:
    """The k-th smallest of the null values, k = ceil(quantile * (B + 1)) (capped at B): an exact level
    1 - quantile test of 'share > floor' when the observed share and the B null values are exchangeable
    (an interpolated quantile lets a null factor through more often: 5.9% instead of 5% at B = 100)."""
    B = len(null)
    k = min(int(np.ceil(quantile * (B + 1) - 1e-9)), B)
    return float(np.sort(null)[k - 1])


def noise_floor(data: Data, subsets, family: str, permutations: int, seq: np.random.SeedSequence,
                extra_total: float, shap: np.ndarray, only: list[int] | None = None) -> tuple[np.ndarray, dict]:
    """The ``NOISE_QUANTILE`` of each factor's Shapley share under ``permutations`` relabellings,
    and per factor: the floor, the null mean, a permutation p-value, whether the share clears it.
    ``only``: the indices of the factors to do (default all; each factor keeps its own random stream)."""
    factors = data.factors
    k = len(factors)
    noise = np.full(k, np.nan)
    per_factor = {}
    C = len(data.cell_n)
    for j, (f, fseq) in enumerate(zip(factors, seq.spawn(k))):
        if only is not None and j not in only:
            continue
        rng = np.random.Generator(np.random.PCG64(fseq))
        perm = Permuter(data, j)
        pn = np.empty((permutations, C))
        ps = np.empty((permutations, C))
        for r in range(permutations):
            pn[r], ps[r] = perm.aggregate(rng)
        pv = subsets.v(pn, ps, np.full(permutations, extra_total), family)
        null = pv @ subsets.W[:, j]
        noise[j] = rank_floor(null)
        exceed = int(np.sum(null >= shap[j] - 1e-12))
        per_factor[f] = {
            "noise_floor": noise[j],
            "null_mean": float(null.mean()),
            "p_value": (1 + exceed) / (1 + permutations),
            "above_noise": bool(shap[j] > noise[j]),
            "permutation": perm.kind,
        }
    return noise, {"method": METHOD, "factors": per_factor}
