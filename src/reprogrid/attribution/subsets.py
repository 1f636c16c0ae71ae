"""v(S) for every subset S of the factors, Shapley values and Sobol totals, vectorized over replicates."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import xlogy


class Subsets:
    """Group maps of the present cells for every subset S of the factors (bit masks 0..2^k-1)."""

    def __init__(self, cell_codes: np.ndarray):
        n_cells, k = cell_codes.shape
        self.k = k
        self.n_masks = 1 << k
        self.sizes = np.array([bin(m).count("1") for m in range(self.n_masks)])
        cols, offsets, total = [], [], 0
        gids: list[np.ndarray] = []
        for mask in range(self.n_masks):
            if mask == 0:
                gid = np.zeros(n_cells, dtype=np.int64)
            else:  # the grouping of mask = that of mask without its top factor, crossed with it
                top = mask.bit_length() - 1
                prev = gids[mask ^ (1 << top)]
                width = int(cell_codes[:, top].max()) + 1
                gid = pd.factorize(prev * width + cell_codes[:, top])[0].astype(np.int64)
            gids.append(gid)
            offsets.append(total)
            cols.append(gid + total)
            total += int(gid.max()) + 1
        self.offsets = np.array(offsets)
        rows = np.tile(np.arange(n_cells), self.n_masks)
        self.G = sparse.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(cols))), shape=(n_cells, total))
        self.GT = self.G.T.tocsr()
        # Shapley weights: phi_j = sum_mask v(mask) * W[mask, j]
        w = [math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k) for s in range(k)]
        W = np.zeros((self.n_masks, k))
        for mask in range(self.n_masks):
            s = self.sizes[mask]
            for j in range(k):
                if mask >> j & 1:
                    W[mask, j] = w[s - 1]
                else:
                    W[mask, j] = -w[s]
        self.W = W
        self.full = self.n_masks - 1

    def group(self, x: np.ndarray) -> np.ndarray:
        """(R, C) cell values -> (R, total groups) group sums."""
        return np.asarray(self.GT @ np.atleast_2d(x).T).T

    def v(self, n: np.ndarray, s: np.ndarray, extra: np.ndarray, family: str) -> np.ndarray:
        """R^2 (gaussian) or deviance R^2 (binomial) of every subset grouping: (R, 2^k).

        ``n``, ``s``: (R, C) cell counts and sums; ``extra``: (R,) total sum of squares (gaussian)
        or total sum of y log y + (1-y) log(1-y) (binomial).
        """
        n, s = np.atleast_2d(n), np.atleast_2d(s)
        gn, gs = self.group(n), self.group(s)
        with np.errstate(divide="ignore", invalid="ignore"):
            if family == "gaussian":
                terms = np.where(gn > 0, gs * gs / np.where(gn > 0, gn, 1.0), 0.0)
                between = np.add.reduceat(terms, self.offsets, axis=1)
                base = between[:, :1]  # mask 0: one group = S_tot^2 / N
                sst = np.asarray(extra) - base[:, 0]
                v = (between - base) / sst[:, None]
            else:
                gf = np.clip(gn - gs, 0.0, None)
                ll = xlogy(gs, gs) + xlogy(gf, gf) - xlogy(gn, gn)
                LL = np.add.reduceat(ll, self.offsets, axis=1)
                base = LL[:, :1]
                dnull = np.asarray(extra) - base[:, 0]
                v = (LL - base) / dnull[:, None]
        v[~np.isfinite(v)] = np.nan  # a degenerate replicate (no spread left) gives no value
        return v

    def shapley(self, v: np.ndarray) -> np.ndarray:
        return v @ self.W

    def sobol_total(self, v: np.ndarray) -> np.ndarray:
        return np.stack([v[:, self.full] - v[:, self.full ^ (1 << j)] for j in range(self.k)], axis=1)

