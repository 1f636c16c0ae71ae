"""The report's figures: PNG images drawn with matplotlib (imported on first use), one function each.

Colours are Okabe & Ito (2008), safe for the common colour-vision deficiencies; every figure carries alt
text that states its numbers. A figure whose input is missing is a placeholder that says why. PNGs are
written without a timestamp, so the same inputs give the same bytes.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from reprogrid.report.fmt import finite, num
from reprogrid.report.outputs import FIGURES

# Okabe & Ito (2008), safe for the common colour-vision deficiencies.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
BLUE, ORANGE, GREEN, PINK, SKY, VERMILLION, YELLOW, BLACK = OKABE_ITO
GREY = "#999999"
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P"]


@dataclass
class Figure:
    name: str
    title: str
    png: bytes
    alt: str
    width: int
    height: int
    placeholder: bool = False

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return matplotlib, plt


STYLE = {
    "font.family": "DejaVu Sans", "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.color": "#dddddd",
    "grid.linewidth": 0.6, "axes.axisbelow": True, "legend.frameon": False, "figure.dpi": 100,
    "savefig.dpi": 120, "axes.prop_cycle": None, "svg.hashsalt": "reprogrid", "path.simplify": True,
}
DPI = 120


def _style():
    matplotlib, plt = _mpl()
    from cycler import cycler

    st = dict(STYLE)
    st["axes.prop_cycle"] = cycler(color=OKABE_ITO)
    return matplotlib.rc_context(st)


def _save(fig, name: str, title: str, alt: str, placeholder: bool = False) -> Figure:
    _, plt = _mpl()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    w, h = fig.get_size_inches()
    plt.close(fig)
    return Figure(name, title, buf.getvalue(), alt, int(round(w * DPI)), int(round(h * DPI)), placeholder)


def placeholder_figure(name: str, title: str, message: str) -> Figure:
    _, plt = _mpl()
    import textwrap

    with _style():
        fig = plt.figure(figsize=(8, 1.6))
        fig.text(0.5, 0.5, "\n".join(textwrap.wrap(f"{title}: not available. {message}", 95)),
                 ha="center", va="center", fontsize=10, color="#444444")
        return _save(fig, name, title, f"{title}: not available. {message}", placeholder=True)


def fig_variance_shares(attr: dict) -> Figure:
    _, plt = _mpl()
    rows = attr["rows"]
    name, title = "variance_shares", FIGURES["variance_shares"][0]
    if not rows:
        return placeholder_figure(name, title, "no factor varies in the grid")
    with _style():
        h = 1.2 + 0.55 * len(rows)
        fig, ax = plt.subplots(figsize=(9, h), layout="constrained")
        y = np.arange(len(rows))[::-1]
        vals = np.array([r["share"].value * 100 for r in rows])
        colors = [BLUE if r["above"] is not False else GREY for r in rows]
        ax.barh(y, vals, color=colors, height=0.6, label="Shapley share of total variance")
        lo = np.array([r["share"].lo * 100 if r["share"].has_ci else np.nan for r in rows])
        hi = np.array([r["share"].hi * 100 if r["share"].has_ci else np.nan for r in rows])
        has = np.isfinite(lo)
        if has.any():
            # drawn from its own ends: an interval for the population share need not contain the raw share
            mid, half = (lo[has] + hi[has]) / 2, (hi[has] - lo[has]) / 2
            ax.errorbar(mid, y[has], xerr=half, fmt="none", ecolor=BLACK, elinewidth=1.2, capsize=4,
                        label="95% interval")
        fl = np.array([r["floor"] * 100 if finite(r["floor"]) else np.nan for r in rows])
        if np.isfinite(fl).any():
            ax.scatter(fl, y, marker="|", s=260, color=VERMILLION, linewidths=2.2, zorder=5,
                       label="noise floor (95th pct. of permuted shares)")
        right = np.nanmax(np.concatenate([vals, hi[has] if has.any() else vals, fl[np.isfinite(fl)]]))
        for yi, r, v, top in zip(y, rows, vals, np.where(has, hi, vals)):
            label = f"{r['share'].point}  ({r['explained_txt']} of explained)"
            if r["above"] is False:
                label += "  below noise"
            ax.text(max(top, v) + right * 0.02, yi, label, va="center", fontsize=9)
        ax.set_yticks(y, [r["effect"] for r in rows])
        ax.set_xlim(0, right * 1.55 if right > 0 else 1)
        ax.set_xlabel("share of the total variance of the per-item score (%)")
        ax.grid(axis="y", visible=False)
        resid = attr.get("residual")
        sub = f"all factors together: {attr['v_all'].full}"
        if resid is not None:
            sub += f"; residual (items, noise, interactions of 3+ factors): {resid.point}"
        ax.set_title(f"{title}\n{sub}", loc="left", fontsize=10)
        ax.legend(loc="lower right", fontsize=8)
        alt = "Bar chart of variance shares: " + "; ".join(f"{r['effect']} {r['share'].full}" for r in rows)
        return _save(fig, name, title, alt)


def fig_interactions(attr: dict, factors: list[str]) -> Figure:
    _, plt = _mpl()
    name, title = "interactions", FIGURES["interactions"][0]
    inter = {(r["a"], r["b"]): r["eta2"] for r in attr["interactions"] if finite(r["eta2"])}
    fs = [f for f in factors if any(f in k for k in inter)]
    if len(fs) < 2 or not inter:
        return placeholder_figure(name, title, "fewer than two factors vary, so there is no two-way interaction")
    k = len(fs)
    rows_f, cols_f = fs[1:], fs[:-1]  # the lower triangle without the empty first row and last column
    M = np.full((k - 1, k - 1), np.nan)
    for (a, b), v in inter.items():
        if a in fs and b in fs and a != b:
            i, j = sorted((fs.index(a), fs.index(b)), reverse=True)
            M[i - 1, j] = v * 100
    with _style():
        fig, ax = plt.subplots(figsize=(3.4 + 0.85 * (k - 1), 1.9 + 0.75 * (k - 1)), layout="constrained")
        vmax = float(np.nanmax(M)) if np.isfinite(M).any() else 1.0
        im = ax.imshow(np.ma.masked_invalid(M), cmap="cividis", vmin=0, vmax=max(vmax, 1e-9))
        d = 2 if vmax < 5 else 1
        for i in range(k - 1):
            for j in range(k - 1):
                if np.isfinite(M[i, j]):
                    ax.text(j, i, f"{M[i, j]:.{d}f}", ha="center", va="center", fontsize=9,
                            color="white" if M[i, j] < 0.6 * vmax else "black")
        ax.set_xticks(range(k - 1), cols_f, rotation=30, ha="right")
        ax.set_yticks(range(k - 1), rows_f)
        ax.grid(False)
        for sp in ax.spines.values():
            sp.set_visible(False)
        cb = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
        cb.set_label("\u03b7\u00b2 of A:B (% of total variance)")
        ax.set_title("Two-way interactions: \u03b7\u00b2 (% of total variance)", loc="left", fontsize=10)
        alt = "Heatmap of two-way interaction eta squared: " + "; ".join(
            f"{a}:{b} {v * 100:.{d}f}%" for (a, b), v in sorted(inter.items(), key=lambda kv: -kv[1])[:6])
        return _save(fig, name, title, alt)


def fig_main_effects(me: pd.DataFrame) -> Figure:
    _, plt = _mpl()
    name, title = "main_effects", FIGURES["main_effects"][0]
    factors = list(dict.fromkeys(me["factor"])) if len(me) else []
    if not factors:
        return placeholder_figure(name, title, "no factor varies in the grid")
    ncol = min(3, len(factors))
    nrow = math.ceil(len(factors) / ncol)
    lo_all = np.nanmin(me["ci_low"].astype(float).fillna(me["score"]).to_numpy()) * 100
    hi_all = np.nanmax(me["ci_high"].astype(float).fillna(me["score"]).to_numpy()) * 100
    pad = max(2.0, (hi_all - lo_all) * 0.08)
    with _style():
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol + 0.6, 2.7 * nrow + 0.5), sharey=True,
                                 layout="constrained", squeeze=False)
        for ax, f in zip(axes.flat, factors):
            sub = me[me["factor"] == f]
            x = np.arange(len(sub))
            v = sub["score"].to_numpy(float) * 100
            lo = sub["ci_low"].to_numpy(float) * 100
            hi = sub["ci_high"].to_numpy(float) * 100
            ax.plot(x, v, color=GREY, linewidth=1, zorder=1)
            ok = np.isfinite(lo)
            ax.errorbar(x[ok], v[ok], yerr=[v[ok] - lo[ok], hi[ok] - v[ok]], fmt="o", color=BLUE, ecolor=BLUE,
                        capsize=4, markersize=6, zorder=2)
            ax.plot(x[~ok], v[~ok], "o", color=BLUE)
            ax.set_xticks(x, sub["level"].tolist(), rotation=20 if max(map(len, sub["level"])) > 8 else 0,
                          ha="right" if max(map(len, sub["level"])) > 8 else "center")
            ax.set_xlim(-0.5, len(sub) - 0.5)
            ax.set_title(f, loc="left")
            ax.set_xlabel(f + (" (tokens)" if f == "context_length" else ""))
        for ax in axes[:, 0]:
            ax.set_ylabel("mean score (0\u2013100)")
        for ax in list(axes.flat)[len(factors):]:
            ax.set_visible(False)
        axes[0, 0].set_ylim(max(-2, lo_all - pad), min(102, hi_all + pad))
        fig.suptitle("Mean cell score per level, averaged over the other factors (95% item-bootstrap intervals)",
                     x=0.01, ha="left", fontsize=10)
        alt = "Main-effect plots: " + "; ".join(
            f"{r.factor}={r.level} {r.est.full}" for r in me.itertuples(index=False))
        return _save(fig, name, title, alt)


def fig_context(ctx: pd.DataFrame | None, varies: bool) -> Figure:
    _, plt = _mpl()
    name, title = "context_length", FIGURES["context_length"][0]
    if ctx is None or not len(ctx):
        return placeholder_figure(name, title, "the grid has no context_length column")
    if not varies:
        return placeholder_figure(name, title, "context_length takes a single level in this grid")
    groups = [g for g in ("model", "quantization") if g in ctx.columns]
    models = list(dict.fromkeys(ctx["model"])) if "model" in ctx.columns else [""]
    quants = list(dict.fromkeys(ctx["quantization"])) if "quantization" in ctx.columns else [""]
    with _style():
        fig, ax = plt.subplots(figsize=(9, 4.6), layout="constrained")
        keys = ctx[groups].drop_duplicates().itertuples(index=False) if groups else [()]
        lengths = sorted(ctx["context_length"].unique())
        for key in keys:
            key = tuple(key)
            m = pd.Series(True, index=ctx.index)
            for g, v in zip(groups, key):
                m &= ctx[g] == v
            sub = ctx[m].sort_values("context_length")
            mi = models.index(key[groups.index("model")]) if "model" in groups else 0
            qi = quants.index(key[groups.index("quantization")]) if "quantization" in groups else 0
            color = OKABE_ITO[mi % len(OKABE_ITO)]
            x = sub["context_length"].to_numpy(float)
            v = sub["score"].to_numpy(float) * 100
            lo, hi = sub["ci_low"].to_numpy(float) * 100, sub["ci_high"].to_numpy(float) * 100
            label = " / ".join(str(k) for k in key) or "all cells"
            ax.plot(x, v, linestyle=LINESTYLES[qi % 4], marker=MARKERS[qi % len(MARKERS)], color=color,
                    label=label, linewidth=1.8, markersize=6)
            ok = np.isfinite(lo)
            if ok.any():
                ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=0.12, linewidth=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [f"{int(L):,}" for L in lengths])
        ax.minorticks_off()
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("mean score (0\u2013100)")
        ax.set_ylim(max(-2, np.nanmin(ctx["ci_low"].fillna(ctx["score"])) * 100 - 5),
                    min(102, np.nanmax(ctx["ci_high"].fillna(ctx["score"])) * 100 + 5))
        ax.legend(title=" / ".join(groups) if groups else None, fontsize=8, title_fontsize=8,
                  loc="center left", bbox_to_anchor=(1.01, 0.5))
        ax.set_title("Mean score per context length and model variant (bands: 95% item-bootstrap intervals)",
                     loc="left", fontsize=10)
        alt = "Score vs context length: " + "; ".join(
            f"{' / '.join(str(r[g]) for g in groups)} at {r['context_length']}: {r['est'].full}"
            for _, r in ctx.iterrows())
        return _save(fig, name, title, alt)


def fig_waterfall(pw: dict | None) -> Figure:
    _, plt = _mpl()
    name, title = "claims_waterfall", FIGURES["claims_waterfall"][0]
    if not pw or not pw.get("available"):
        reason = (pw or {}).get("reason", "claims/verdicts.json is missing")
        return placeholder_figure(name, title, f"the pairwise explanation was not computed: {reason}")
    contrib = pw["contributions"]
    low, high = pw["low_value"] * 100, pw["high_value"] * 100
    with _style():
        n = len(contrib) + 2
        fig, ax = plt.subplots(figsize=(max(8.0, 1.5 * n + 2), 4.8), layout="constrained")
        labels = ["low claim's\nbest cell"]
        ax.bar(0, low, color=GREY, width=0.6)
        dg = pw["gap"].d
        _bar_label(ax, 0, low, num(low, dg))
        run = low
        tops = [low, high]
        for i, c in enumerate(contrib, start=1):
            v = c["est"].value * 100 if finite(c["est"].value) else 0.0
            color = BLUE if v >= 0 else VERMILLION
            ax.bar(i, v, bottom=run, color=color, width=0.6)
            if c["est"].has_ci:
                end = run + v
                ax.errorbar(i, end, yerr=[[v - c["est"].lo * 100], [c["est"].hi * 100 - v]], fmt="none",
                            ecolor=BLACK, capsize=4, elinewidth=1.1)
            ax.plot([i - 1 + 0.3, i - 0.3], [run, run], color="#666666", linewidth=0.8)
            ax.text(i + 0.33, run + v / 2, c["est"].point, ha="left", va="center", fontsize=9)
            tops.append(run + max(v, c["est"].hi * 100 if c["est"].has_ci else v))
            run += v
            labels.append(f"{c['factor']}\n{c['from']}\n\u2192 {c['to']}")
        ax.plot([n - 2 + 0.3, n - 1 - 0.3], [run, run], color="#666666", linewidth=0.8)
        ax.bar(n - 1, high, color=GREY, width=0.6)
        _bar_label(ax, n - 1, high, num(high, dg))
        labels.append("high claim's\nbest cell")
        drawn = False
        for xi, claimed in ((0, pw.get("low_claimed")), (n - 1, pw.get("high_claimed"))):
            if finite(claimed):
                ax.plot([xi - 0.38, xi + 0.38], [claimed * 100] * 2, color=BLACK, linestyle=(0, (3, 2)), linewidth=1.6,
                        label=None if drawn else "value the claim reports")
                drawn = True
        if drawn:
            ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
        ax.set_xticks(range(n), labels, fontsize=8)
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_ylim(min(0.0, min(tops) - 5), max(tops) + 8)
        ax.set_ylabel("score (0\u2013100)")
        ax.axhline(0, color="#444444", linewidth=0.8)
        ax.grid(axis="x", visible=False)
        ax.set_title(f"Gap {pw['gap'].full} points, split into factor contributions (exact Shapley, "
                     "95% item-bootstrap intervals)", loc="left", fontsize=10)
        alt = (f"Waterfall from {num(low, dg)} to {num(high, dg)}: "
               + "; ".join(f"{c['factor']} {c['est'].full}" for c in contrib))
        return _save(fig, name, title, alt)


def _bar_label(ax, x: float, y: float, text: str) -> None:
    """The value of a total bar, halfway up inside it (clear of the dashed claimed-value marker)."""
    if y > 12:
        ax.text(x, y / 2, text, ha="center", va="center", fontsize=10, color="white", fontweight="bold")
    else:
        ax.text(x, y + 1, text, ha="center", va="bottom", fontsize=9)


def fig_specdec(sd: dict | None) -> Figure:
    _, plt = _mpl()
    name, title = "specdec", FIGURES["specdec"][0]
    if not sd or not sd.get("available"):
        return placeholder_figure(name, title, "specdec/specdec.parquet is missing: the study did not run")
    rows = sd["rows"]
    tasks = [r.get("label", r["task"]) for r in rows]
    x = np.arange(len(rows))
    with _style():
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
        m = np.array([r["speedup"].value for r in rows])
        lo = np.array([r["speedup"].lo if r["speedup"].has_ci else np.nan for r in rows])
        hi = np.array([r["speedup"].hi if r["speedup"].has_ci else np.nan for r in rows])
        a1.bar(x - 0.18, m, width=0.36, color=BLUE, label="measured")
        ok = np.isfinite(lo)
        a1.errorbar(x[ok] - 0.18, m[ok], yerr=[m[ok] - lo[ok], hi[ok] - m[ok]], fmt="none", ecolor=BLACK, capsize=4)
        a1.bar(x + 0.18, [r["speedup_predicted"] for r in rows], width=0.36, color=ORANGE,
               label="predicted " + sd.get("predicted_formula", "E/(\u03b3c+1)"))
        a1.axhline(1, color="#444444", linewidth=0.8, linestyle="--")
        tick = ({"rotation": 30, "ha": "right", "rotation_mode": "anchor", "fontsize": 7} if sd.get("multi_pair")
                else {"rotation": 15})
        a1.set_xticks(x, tasks, **tick)
        a1.set_ylabel("speed-up over the verifier alone (\u00d7)")
        a1.set_title("Speed-up per task (95% bootstrap intervals)", loc="left", fontsize=10)
        a1.legend(fontsize=8, loc="upper center", ncol=2)
        a1.set_ylim(0, max(np.nanmax(hi) if np.isfinite(hi).any() else 0, np.nanmax(m),
                           max(r["speedup_predicted"] for r in rows)) * 1.18)
        a2.bar(x - 0.18, [r["alpha_empirical"] for r in rows], width=0.36, color=GREEN, label="empirical A/(A+R)")
        a2.bar(x + 0.18, [r["alpha_analytic"] for r in rows], width=0.36, color=PINK,
               label="analytic \u03a3 min(p, q)")
        a2.set_ylim(0, 1.15)
        a2.set_yticks(np.linspace(0, 1, 6))
        a2.set_xticks(x, tasks, **tick)
        a2.set_ylabel("acceptance rate \u03b1 (fraction of draft tokens)")
        a2.set_title("Acceptance rate per task", loc="left", fontsize=10)
        a2.legend(fontsize=8, loc="upper center", ncol=2)
        alt = "Speculative decoding per task: " + "; ".join(
            f"{r.get('label', r['task'])} speed-up {r['speedup'].full}, alpha {r['alpha_empirical']:.2f}" for r in rows)
        return _save(fig, name, title, alt)
