"""Variance components of a score (generalizability theory, G study) on a balanced design.

Design. Every row is one score of one item in one protocol cell. The facets are

- random facets ``random`` (e.g. ``task``, ``data_seed``): crossed with each other and with the protocol;
- ``nest`` (fixed protocol factors that change the items, e.g. ``context_length``, a sizing tokenizer),
  combined into one fixed factor;
- the item (column(s) ``item``), *nested* in every random facet and in ``nest``: an item is its id within
  one (random facets, nest) combination (RULER draws different documents for every task, length and seed);
- the other protocol factors ``fixed``, combined into one fixed factor ``protocol``, crossed with all.

Model (unrestricted mixed model, all random effects independent, as ``statsmodels`` ``MixedLM`` fits it):
y = mu + sum over terms u of effect_u, one term per set of facets closed under nesting (a term with the
item contains its nest). A term is *random* when it contains a random facet or the item. The top term
(item x protocol) is the residual (one score per item and cell: the item x cell interaction and the
per-sample noise are not separable).

Estimator (balanced designs): ANOVA expected mean squares. SS_u = sum over rows of the effect of u
(marginal means minus all sub-terms), df_u likewise; E[MS_u] = sum over random v containing u of
(N / |v|) sigma2_v (+ a fixed part when u is fixed), |v| = number of levels of v. Solving the triangular
system gives each sigma2_v as a linear combination sum_k c_k MS_k (negative estimates are kept in
``estimate`` and truncated at 0 in ``component``). On balanced designs REML (MixedLM) gives the same values
whenever none is negative. For a fixed term the same algebra gives theta2_u = mean squared effect over
its levels (the variance of the fixed effect across the levels that exist).

Interval: the modified large-sample (MLS) interval of Graybill and Wang for a linear combination of mean
squares, sum_q c_q MS_q - sum_r c_r MS_r: lower = est - sqrt(sum_q G_q^2 c_q^2 MS_q^2 + sum_r H_r^2 c_r^2 MS_r^2),
upper = est + sqrt(sum_q H_q^2 c_q^2 MS_q^2 + sum_r G_r^2 c_r^2 MS_r^2), with G = 1 - df/chi2(1-a/2, df),
H = df/chi2(a/2, df) - 1; exact (chi-square) for a single mean square; truncated at 0.

G coefficients for the protocol cells (the objects of measurement, each cell = one (nest, protocol) pair):
universe-score variance sigma2_p = sum of the fixed theta2; relative error sigma2_delta = sum over random
terms v that contain the nest or the protocol of sigma2_v / prod(n_f, random facets f of v); absolute error
sigma2_Delta = the same sum over all random terms. G = sigma2_p / (sigma2_p + sigma2_delta),
Phi = sigma2_p / (sigma2_p + sigma2_Delta). Here n_f is the number of levels of facet f in the study (for
the item: items per (random facets, nest) combination).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from reprogrid.errors import UserError

CSV_NAME = "variance_components.csv"
JSON_NAME = "variance_components.json"
COLUMNS = ["component", "kind", "facets", "estimate", "component_value", "ci_low", "ci_high", "share",
           "df", "mean_square", "n_levels"]
ITEM = "item"
PROTOCOL = "protocol"


class Unbalanced(UserError):
    """The design is not balanced (the ANOVA estimators need every item in every cell once)."""


@dataclass
class Design:
    """The scores as a full array, one axis per facet: random facets, nest, item, protocol."""

    y: np.ndarray
    axes: list[str]  # axis names
    kinds: list[str]  # "random", "fixed" or "item"
    parents: list[frozenset]  # axes each axis is nested in
    levels: dict[str, list[Any]] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)  # facet -> why it is not in the design


def _key(df: pd.DataFrame, cols: Sequence[str]) -> tuple[np.ndarray, list[Any]]:
    """Codes of the combination of ``cols`` (levels read as text, sorted column by column) and the
    combinations' labels ("a | b")."""
    if not cols:
        return np.zeros(len(df), dtype=np.int64), [()]
    codes, uniqs = [], []
    for c in cols:
        cc, uu = pd.factorize(df[c].astype(str), sort=True)
        codes.append(cc.astype(np.int64))
        uniqs.append(list(uu))
    if len(cols) == 1:
        return codes[0], uniqs[0]
    flat = np.ravel_multi_index(tuple(codes), tuple(len(u) for u in uniqs))
    comb, first, inv = np.unique(flat, return_index=True, return_inverse=True)
    labels = [" | ".join(str(uniqs[k][codes[k][i]]) for k in range(len(cols))) for i in first]
    return inv.reshape(-1).astype(np.int64), labels


def build_design(df: pd.DataFrame, response: str, item: Sequence[str], random: Sequence[str],
                 nest: Sequence[str] = (), fixed: Sequence[str] = (), drop_incomplete: bool = True) -> Design:
    """The full array of scores; refuses (``Unbalanced``) designs with a missing or repeated score.
    With ``drop_incomplete``, protocol cells (combinations of the ``fixed`` factors) that miss a score
    (a failed cell, or one absent at some nest level) are left out first and named in ``dropped``."""
    cols = [response, *item, *random, *nest, *fixed]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise UserError(f"no such column in the table (columns: {', '.join(map(str, df.columns))})",
                        field=missing[0])
    if not item:
        raise UserError("expected an item column", field="item")
    y = pd.to_numeric(df[response], errors="coerce").to_numpy(float)
    if not np.isfinite(y).all():
        raise UserError(f"response has {int((~np.isfinite(y)).sum())} missing or non-numeric values", field=response)
    dropped = {}
    axes, kinds, codes, parents, levels = [], [], [], [], {}

    def add(name, kind, c, lv, par=frozenset()):
        axes.append(name), kinds.append(kind), codes.append(c), parents.append(par)
        levels[name] = lv

    for f in random:
        c, u = _key(df, [f])
        if len(u) < 2:
            dropped[f] = f"one level ({u[0]}): no variance component"
        else:
            add(f, "random", c, u)
    nest_v = [f for f in nest if df[f].nunique() > 1]
    dropped.update({f: "one level: not a facet" for f in nest if f not in nest_v})
    if nest_v:
        c, u = _key(df, nest_v)
        add("+".join(nest_v), "fixed", c, u)
    group = (np.ravel_multi_index(tuple(codes), tuple(int(c.max()) + 1 for c in codes)) if codes
             else np.zeros(len(df), dtype=np.int64))
    icode, _ = _key(df, list(item))
    within = pd.Series(icode).groupby(group).rank(method="dense").to_numpy(np.int64) - 1
    add(ITEM, "item", within, [], frozenset(range(len(axes))))
    fixed_v = [f for f in fixed if df[f].nunique() > 1]
    dropped.update({f: "one level: not a facet" for f in fixed if f not in fixed_v})
    if fixed_v:
        c, u = _key(df, fixed_v)
        add(PROTOCOL, "fixed", c, u)
    shape = tuple(int(c.max()) + 1 for c in codes)
    flat = np.ravel_multi_index(tuple(codes), shape)
    if len(np.unique(flat)) != len(flat):
        raise Unbalanced("several scores for one item in one cell: name every factor that varies "
                         "(random, nest or fixed)", field="design")
    if len(flat) != int(np.prod(shape)) and fixed_v and drop_incomplete:
        have = np.zeros(shape, dtype=bool)
        have.flat[flat] = True
        complete = have.reshape(-1, shape[-1]).all(axis=0)  # protocol is the last axis
        if 1 <= complete.sum() < len(complete):
            keep = complete[codes[-1]]
            out = build_design(df[keep], response, item, random, nest, fixed, drop_incomplete=False)
            gone = [levels[PROTOCOL][c] for c in np.flatnonzero(~complete)]
            out.dropped["protocol cells left out"] = (f"{len(gone)} cell(s) without a score for every item: "
                                                      + "; ".join(gone))
            return out
    if len(flat) != int(np.prod(shape)):
        per_group = pd.Series(within).groupby(group).nunique()
        raise Unbalanced(f"unbalanced design: {int(np.prod(shape)) - len(flat)} of {int(np.prod(shape))} "
                         f"(item, cell) scores missing (items per group {int(per_group.min())}-"
                         f"{int(per_group.max())}; every item must be scored in every cell)", field="design")
    Y = np.empty(shape)
    Y.flat[flat] = y
    return Design(Y, axes, kinds, parents, levels, dropped)


def _terms(design: Design) -> list[frozenset]:
    """Sets of axes closed under nesting, smallest first."""
    n = len(design.axes)
    out = []
    for r in range(n + 1):
        for t in itertools.combinations(range(n), r):
            s = frozenset(t)
            if all(design.parents[a] <= s for a in s):
                out.append(s)
    return out


def anova_table(design: Design) -> list[dict[str, Any]]:
    """Sum of squares, degrees of freedom and number of levels of every term (grand mean excluded)."""
    Y = design.y
    n_axes = Y.ndim
    N = Y.size
    terms = _terms(design)
    eff: dict[frozenset, np.ndarray] = {}
    dfs: dict[frozenset, int] = {}
    rows = []
    for u in terms:
        other = tuple(a for a in range(n_axes) if a not in u)
        e = Y.mean(axis=other, keepdims=True) if other else Y.copy()
        n_u = int(np.prod([Y.shape[a] for a in u])) if u else 1
        d = n_u
        for w in terms:
            if w < u:
                e = e - eff[w]
                d -= dfs[w]
        eff[u], dfs[u] = e, d
        if u:
            rows.append({"term": u, "ss": float(np.sum(e * e)) * (N / n_u), "df": d, "n": n_u})
    return rows


def _name(design: Design, u: frozenset) -> str:
    return ":".join(design.axes[a] for a in sorted(u))


def _mls(c: np.ndarray, ms: np.ndarray, df: np.ndarray, level: float) -> tuple[float, float]:
    """Modified large-sample interval of sum_k c_k MS_k (Graybill-Wang), truncated at 0."""
    a = 1 - level
    use = (c != 0) & (df > 0)
    c, ms, df = c[use], ms[use], df[use]
    est = float(np.dot(c, ms))
    G = 1 - df / sps.chi2.ppf(1 - a / 2, df)
    H = df / sps.chi2.ppf(a / 2, df) - 1
    x = c * ms
    pos = c > 0
    lo = est - np.sqrt(np.sum(np.where(pos, G * G, H * H) * x * x))
    hi = est + np.sqrt(np.sum(np.where(pos, H * H, G * G) * x * x))
    return max(float(lo), 0.0), max(float(hi), 0.0)


def components(design: Design, level: float = 0.95) -> pd.DataFrame:
    """One row per term: its variance component (random) or mean squared effect (fixed), with an interval."""
    rows = anova_table(design)
    N = design.y.size
    random = [r for r in rows if any(design.kinds[a] != "fixed" for a in r["term"])]
    ms = np.array([r["ss"] / r["df"] if r["df"] > 0 else np.nan for r in rows])
    dfa = np.array([r["df"] for r in rows], dtype=float)
    idx = {r["term"]: i for i, r in enumerate(rows)}
    # E[MS_u] = sum_{v random, v >= u} (N/|v|) sigma2_v (+ theta for fixed u): coefficients per term
    A = np.zeros((len(rows), len(rows)))
    for r in rows:
        for v in random:
            if r["term"] <= v["term"]:
                A[idx[r["term"]], idx[v["term"]]] = N / v["n"]
        if r not in random:
            A[idx[r["term"]], idx[r["term"]]] = N / r["n"] * r["n"] / max(r["df"], 1)
    C = np.linalg.inv(A)  # sigma2 (or theta2) = C @ MS
    out = []
    for i, r in enumerate(rows):
        est = float(C[i] @ np.nan_to_num(ms))
        lo, hi = _mls(C[i], np.nan_to_num(ms), dfa, level)
        kind = "random" if r in random else "fixed"
        out.append({"component": _name(design, r["term"]), "kind": kind,
                    "facets": len(r["term"]), "estimate": est, "component_value": max(est, 0.0),
                    "ci_low": lo, "ci_high": hi, "df": r["df"], "mean_square": ms[i], "n_levels": r["n"],
                    "_term": r["term"]})
    table = pd.DataFrame(out)
    top = frozenset(range(len(design.axes)))
    table.loc[table["_term"] == top, "component"] += " (residual)"
    tot = table["component_value"].sum()
    table["share"] = table["component_value"] / tot if tot > 0 else np.nan
    return table


def coefficients(design: Design, table: pd.DataFrame, n: dict[str, float] | None = None) -> dict[str, float]:
    """G and Phi of the protocol cells' mean scores for facet sizes ``n`` (default: the study's)."""
    sizes = dict(zip(design.axes, design.y.shape))
    sizes.update(n or {})
    cellwise = {a for a, k in enumerate(design.kinds) if k == "fixed"}
    sigma_p = float(table.loc[table["kind"] == "fixed", "component_value"].sum())
    rel = absolute = 0.0
    for _, r in table[table["kind"] == "random"].iterrows():
        div = np.prod([sizes[design.axes[a]] for a in r["_term"] if design.kinds[a] != "fixed"])
        part = r["component_value"] / div
        absolute += part
        if r["_term"] & cellwise:
            rel += part
    g = sigma_p / (sigma_p + rel) if sigma_p + rel > 0 else float("nan")
    phi = sigma_p / (sigma_p + absolute) if sigma_p + absolute > 0 else float("nan")
    return {"universe_score_variance": sigma_p, "relative_error_variance": rel,
            "absolute_error_variance": absolute, "G": g, "Phi": phi}
