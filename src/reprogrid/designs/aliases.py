"""The alias structure of a set of runs: which main effects and two-way interactions it can estimate, and
which are confounded with which.

Effects are coded as in the attribution's ANOVA (sum-to-zero contrasts; an interaction is the product of its
factors' contrasts). Terms enter in order (main effects, then two-way interactions in factor order); a term
keeps the contrast columns that are not already spanned by the terms before it. A two-way interaction is
fitted only if all its columns are left (one held in part would be split arbitrarily); one with no column
left is aliased: named together with the earlier term(s) whose span holds it (``a:b = c:d``), never split.
For a regular two-level fraction the full alias chains (to three-factor interactions) come from pyDOE3's
``fracfact_aliasing``.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np

TOL = 1e-9


def terms_of(k: int) -> list[tuple[int, ...]]:
    """Main effects, then two-way interactions, as tuples of factor positions."""
    return [(j,) for j in range(k)] + list(itertools.combinations(range(k), 2))


def term_name(term: Sequence[int], names: Sequence[str]) -> str:
    return ":".join(names[j] for j in term)


def _main(codes: np.ndarray, L: int) -> np.ndarray:
    X = np.zeros((len(codes), L - 1))
    for lv in range(L - 1):
        X[:, lv] = (codes == lv).astype(float) - (codes == L - 1).astype(float)
    return X


def _df(term: Sequence[int], n_levels: Sequence[int]) -> int:
    return int(np.prod([int(n_levels[j]) - 1 for j in term]))


def term_matrix(codes: np.ndarray, n_levels: Sequence[int], term: Sequence[int]) -> np.ndarray:
    """Contrast columns of one term on rows of level codes."""
    X = np.ones((len(codes), 1))
    for j in term:
        M = _main(codes[:, j], int(n_levels[j]))
        X = (X[:, :, None] * M[:, None, :]).reshape(len(codes), -1)
    return X


def greedy_model(codes: np.ndarray, n_levels: Sequence[int], names: Sequence[str],
                 terms: Sequence[tuple[int, ...]] | None = None) -> dict[str, Any]:
    """The estimable part of the main-effects + two-way model on these rows (default order: main effects, then
    two-way interactions by degrees of freedom, in factor order among equals).

    Returns ``columns``: [(term, indices of its kept contrast columns)], ``df``: term name -> (estimable,
    full degrees of freedom), ``aliased``: term name -> the earlier term names whose span holds it, or (held
    in part) whose span overlaps it; such two-way interactions are not fitted."""
    if terms is None:  # two-way interactions with fewer degrees of freedom first: whole effects before big ones
        terms = sorted(terms_of(codes.shape[1]), key=lambda t: (len(t), _df(t, n_levels) if len(t) > 1 else 0))
    n = len(codes)
    basis = [np.ones(n) / np.sqrt(n)]
    columns, df, aliased, partial = [], {}, {}, {}
    for t in terms:
        X = term_matrix(codes, n_levels, t)
        Q = np.column_stack(basis)
        kept = []
        for i in range(X.shape[1]):
            c = X[:, i]
            r = c - Q @ (Q.T @ c)
            if np.linalg.norm(r) > TOL * max(np.linalg.norm(c), 1.0) * np.sqrt(n):
                basis.append(r / np.linalg.norm(r))
                Q = np.column_stack(basis)
                kept.append(i)
        name = term_name(t, names)
        df[name] = (len(kept), X.shape[1])
        if len(kept) == X.shape[1] or (kept and len(t) == 1):
            columns.append((t, kept))
        else:  # a two-way interaction the runs hold only in part is not fitted: its estimable part is arbitrary
            del basis[len(basis) - len(kept):]
            partners = _partners(X, codes, n_levels, names, [c[0] for c in columns])
            (partial if kept else aliased)[name] = partners
    return {"columns": columns, "df": df, "aliased": aliased, "partial": partial}


def _partners(X, codes, n_levels, names, earlier) -> list[str]:
    """The earlier terms that hold X in their span (with the intercept); if no single one does, the ones
    whose span overlaps X."""
    Xc = X - X.mean(axis=0)
    overlap = []
    for u in earlier:
        U = term_matrix(codes, n_levels, u)
        U = np.column_stack([np.ones(len(U)), U])
        beta, *_ = np.linalg.lstsq(U, X, rcond=None)
        if np.allclose(U @ beta, X, atol=1e-8):
            return [term_name(u, names)]
        Uc = U[:, 1:] - U[:, 1:].mean(axis=0)
        if np.abs(Uc.T @ Xc).max() > 1e-8:
            overlap.append(term_name(u, names))
    return overlap


def model_matrix(codes: np.ndarray, n_levels: Sequence[int], columns) -> np.ndarray:
    """Intercept plus the kept contrast columns (``greedy_model``'s ``columns``) on rows of level codes."""
    parts = [np.ones((len(codes), 1))]
    for t, kept in columns:
        parts.append(term_matrix(codes, n_levels, t)[:, kept])
    return np.hstack(parts)


def chains(aliased: dict[str, list[str]]) -> list[list[str]]:
    """Alias groups: an earlier term first, then the terms aliased with it alone."""
    groups: dict[str, list[str]] = {}
    for name, partners in aliased.items():
        if len(partners) == 1:
            groups.setdefault(partners[0], [partners[0]]).append(name)
    return list(groups.values())


def alias_structure(plan) -> dict[str, Any]:
    """JSON-ready alias structure of a :class:`~reprogrid.designs.plan.Plan`."""
    names, sizes = plan.factors, [len(lv) for lv in plan.levels]
    codes = np.array([[lv.index(x) for lv, x in zip(plan.levels, run)] for run in sorted(plan.runs(), key=str)])
    g = greedy_model(codes, sizes, names)
    out: dict[str, Any] = {
        "design": {k: v for k, v in plan.settings.items()},
        "family": plan.family,
        "factors": {f: [_jsonable(x) for x in lv] for f, lv in zip(names, plan.levels)},
        "runs": plan.n_runs,
        "full_runs": plan.n_full,
        "estimable": [n for n, (kept, full) in g["df"].items() if kept == full],
        "partly_estimable": {n: {"df": full, "estimable_df": kept} for n, (kept, full) in g["df"].items()
                             if 0 < kept < full},
        "aliased": [" = ".join(c) for c in chains(g["aliased"])],
        "not_estimable": {n: p for n, p in g["aliased"].items() if len(p) != 1},
        "note": ("effects are main effects and two-way interactions of the design factors; an aliased effect "
                 "is estimated only together with the effects it is aliased with (named together, not split); "
                 "scoring factors are fully crossed with every run"),
    }
    if plan.settings["type"] == "adaptive":
        out.update(screening_runs=plan.n_screening, rounds=len(plan.rounds))
    if plan.generators:
        out["generators"] = _named_generators(plan.generators, names)
        out["chains"] = _fracfact_chains(plan.codes, names) if not plan.rounds else []
    return out


def _jsonable(x):
    return x.item() if hasattr(x, "item") else x


def _named_generators(gen: str, names: Sequence[str]) -> list[str]:
    letters = gen.split()
    out = []
    for j, w in enumerate(letters):
        if len(w) > 1:
            out.append(f"{names[j]} = " + ":".join(names[ord(c) - ord('a')] for c in w))
    return out


def _fracfact_chains(codes: np.ndarray, names: Sequence[str], max_order: int = 3) -> list[str]:
    """pyDOE3's alias chains of a regular fraction, words up to ``max_order`` factors, chains with an effect
    of order <= 2 and more than one member."""
    from pyDOE3 import fracfact_aliasing

    if codes.shape[1] > 12:  # 2^k words: keep it quick
        return []
    chains_text, _ = fracfact_aliasing(codes * 2.0 - 1.0)
    out = []
    for chain in chains_text:
        words = [w.strip() for w in chain.split("=")]
        words = [w for w in words if len(w) <= max_order]
        if len(words) > 1 and min(len(w) for w in words) <= 2:
            out.append(" = ".join(":".join(names[ord(c) - ord('a')] for c in w) for w in words))
    return out


def alias_summary(struct: dict[str, Any]) -> list[str]:
    """Human-readable lines for ``reprogrid grid``."""
    d = struct["design"]
    how = f"resolution {d['resolution']}" if "resolution" in d else f"reduction {d.get('reduction')}"
    sizes = ", ".join(f"{f} ({len(lv)})" for f, lv in struct["factors"].items())
    lines = [f"design: {d['type']}, {struct['family']} ({how}, seed {d['seed']}): {struct['runs']} of "
             f"{struct['full_runs']} generation runs over {sizes}; scoring factors fully crossed"]
    if d["type"] == "adaptive":
        lines.append(f"adaptive: {struct['screening_runs']} screening runs + {struct['rounds']} follow-up round(s); "
                     f"budget {d['budget']} runs, {d.get('follow_up', 8)} per round (reprogrid adapt)")
    if struct.get("generators"):
        lines.append("generators: " + "; ".join(struct["generators"]))
    lines.append("estimable: " + (", ".join(struct["estimable"]) or "none"))
    if struct["aliased"]:
        lines.append("aliased (estimated together, not split): " + "; ".join(struct["aliased"]))
    for n, p in struct["not_estimable"].items():
        lines.append(f"not estimable: {n} (confounded with a combination of {', '.join(p) or 'the intercept'})")
    for n, v in struct["partly_estimable"].items():
        lines.append(f"partly estimable, not fitted: {n} ({v['estimable_df']} of {v['df']} degrees of freedom; "
                     "the rest is confounded with earlier effects)")
    if struct.get("chains"):
        lines.append("alias chains (to three-factor interactions): " + "; ".join(struct["chains"]))
    return lines
