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
        self.kind = ("within items" if self.crossed and not self.segments else
                     "between units" if self.segments and not self.crossed else
                     "mixed" if self.crossed else "none (no two entries to exchange)")

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
        if self.n_pooled:
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



NOISE_QUANTILE = 0.95
DEFAULT_NOISE_PERMUTATIONS = 100
METHOD = ("restricted permutation of the factor's labels within the cells of the other factors "
          "(within items where items are crossed with the factor, between items otherwise); "
          "noise_floor = the quantile of the permuted factor's Shapley share")


def noise_floor(data: Data, subsets, family: str, permutations: int, seq: np.random.SeedSequence,
                extra_total: float, shap: np.ndarray) -> tuple[np.ndarray, dict]:
    """The ``NOISE_QUANTILE`` of each factor's Shapley share under ``permutations`` relabellings,
    and per factor: the floor, the null mean, a permutation p-value, whether the share clears it."""
    factors = data.factors
    k = len(factors)
    noise = np.full(k, np.nan)
    per_factor = {}
    C = len(data.cell_n)
    for j, (f, fseq) in enumerate(zip(factors, seq.spawn(k))):
        rng = np.random.Generator(np.random.PCG64(fseq))
        perm = Permuter(data, j)
        pn = np.empty((permutations, C))
        ps = np.empty((permutations, C))
        for r in range(permutations):
            pn[r], ps[r] = perm.aggregate(rng)
        pv = subsets.v(pn, ps, np.full(permutations, extra_total), family)
        null = pv @ subsets.W[:, j]
        noise[j] = float(np.quantile(null, NOISE_QUANTILE))
        exceed = int(np.sum(null >= shap[j] - 1e-12))
        per_factor[f] = {
            "noise_floor": noise[j],
            "null_mean": float(null.mean()),
            "p_value": (1 + exceed) / (1 + permutations),
            "above_noise": bool(shap[j] > noise[j]),
            "permutation": perm.kind,
        }
    return noise, {"method": METHOD, "factors": per_factor}
