"""Rendering: the figures, the tables, ``summary.md`` and the self-contained ``index.html`` (Jinja
templates in ``reprogrid/templates``), written atomically under the report folder."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

import pandas as pd

from reprogrid.catalogue import level_text
from reprogrid.io import atomic_path
from reprogrid.report import figures as F
from reprogrid.report.assemble import Sections, assemble
from reprogrid.report.fmt import finite, num, pct, pt
from reprogrid.report.inputs import load_inputs
from reprogrid.report.outputs import DEFAULT_BOOTSTRAP, expected_outputs
from reprogrid.report.tables import build_tables, to_csv

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
CONTEXT_GROUPS = ("model", "quantization")


def _md_cell(x: Any) -> str:
    s = "" if x is None else str(x)
    return s.replace("|", "\\|").replace("\n", " ")


def md_table(rows: list[list[Any]], header: list[str], align: str | None = None) -> str:
    align = align or "l" * len(header)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["md_table"] = lambda rows, header, align=None: md_table(rows, header, align)
    env.filters["lvl"] = level_text
    env.filters["pct"] = pct
    env.filters["num"] = lambda x, d=2: num(float(x), d) if finite(x) else "n/a"
    env.filters["pt"] = pt
    return env


def _generated_at() -> str:
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    t = (_dt.datetime.fromtimestamp(int(sde), tz=_dt.timezone.utc) if sde and sde.isdigit()
         else _dt.datetime.now(tz=_dt.timezone.utc))
    return t.strftime("%Y-%m-%d %H:%M UTC")


def draw_figures(sec: Sections, names: list[str]) -> dict[str, F.Figure]:
    varying = sec.scores.varying
    figs = {
        "variance_shares": F.fig_variance_shares(sec.attr),
        "interactions": F.fig_interactions(sec.attr, varying),
        "main_effects": F.fig_main_effects(sec.main_effects),
        "context_length": F.fig_context(sec.context, sec.context_varies),
    }
    if "claims_waterfall" in names:
        figs["claims_waterfall"] = F.fig_waterfall(sec.claims.get("pairwise") if sec.claims else None)
    if "specdec" in names:
        figs["specdec"] = F.fig_specdec(sec.specdec)
    return figs


def template_context(sec: Sections, figs: dict, n_boot: int) -> dict:
    me, ctx = sec.main_effects, sec.context
    has_ctx = ctx is not None and len(ctx)
    me_rows = [{"factor": r.factor, "level": r.level, "n_cells": r.n_cells, "est": r.est}
               for r in me.itertuples(index=False)]
    ctx_rows = ([{**{g: r[g] for g in CONTEXT_GROUPS if g in ctx.columns},
                  "context_length": r["context_length"], "n_cells": r["n_cells"], "est": r["est"]}
                 for _, r in ctx.iterrows()] if has_ctx else [])
    return {
        "study": sec.study, "attr": sec.attr, "head": sec.head, "main_effects": me_rows, "ctx_rows": ctx_rows,
        "ctx_groups": [g for g in CONTEXT_GROUPS if ctx is not None and g in ctx.columns],
        "ctx_varies": sec.context_varies, "claims": sec.claims, "specdec": sec.specdec, "pitfalls": sec.pitfalls, "research": sec.research, "noise": sec.noise,
        "design": sec.design,
        "caveats": sec.caveats, "prov": sec.prov, "figures": figs, "notes": sec.inp.notes, "level": "95%",
        "n_boot": n_boot, "generated_at": _generated_at(), "config_name": Path(sec.inp.cfg.path).name,
    }


def build_report(cfg, results: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 n_boot: int = DEFAULT_BOOTSTRAP) -> dict[str, Path]:
    """Read the results, write summary.md, index.html, figures/*.png and tables/*.csv; return their paths."""
    results = Path(results)
    out = Path(out_dir) if out_dir else results / "report"
    sec = assemble(load_inputs(cfg, results), n_boot)
    fig_names, table_names = expected_outputs(cfg)
    figs = draw_figures(sec, fig_names)
    tables = build_tables(sec)
    context = template_context(sec, figs, n_boot)
    env = _env()
    md = env.get_template("summary.md.j2").render(**context)
    html = env.get_template("report.html.j2").render(**context)
    paths = {"summary": out / "summary.md", "html": out / "index.html"}
    for name, fig in figs.items():
        paths[f"figure:{name}"] = _write(out / "figures" / f"{name}.png", fig.png)
    for name in table_names:
        df = tables.get(name)
        paths[f"table:{name}"] = _write(out / "tables" / f"{name}.csv", to_csv(df if df is not None else pd.DataFrame()))
    _write(paths["summary"], md)
    _write(paths["html"], html)
    return paths


def _write(path: Path, data: str | bytes) -> Path:
    """Write atomically, readable by everyone (mkstemp's 0600 would hide the report from a web server)."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
    return path
