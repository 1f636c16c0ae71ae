"""The attribution report: what a reader sees, trusts and cites.

``reprogrid report --config C --results R [--out DIR] [--bootstrap N]`` reads the finished results
directory ``R`` and writes, under ``R/report`` (or ``DIR``):

* ``summary.md``: the findings as text and tables (for papers and issues);
* ``index.html``: the same findings with figures, self-contained (images inline as base64 PNG, CSS
  inline, no script, no font or network request);
* ``figures/<name>.png`` and ``tables/<name>.csv``: every figure and table on its own, for
  ``snakemake --report`` (see :data:`FIGURES` and :data:`TABLES`).

Required inputs: ``tables/cells.parquet``, ``tables/samples.parquet`` and
``attribution/variance_shares.csv`` (its ``.json`` beside it is read when present). Everything else
(claims, speculative decoding, generation manifests and provenance, prepared-model provenance,
benchmark TSVs) is optional: a section whose input is missing is replaced by a note saying so.

Numbers: variance shares are shown as percentages of the total variance of the per-item score (the
Shapley values of ``reprogrid attribute``, which sum to v_all = R^2 of the full factorial model) and as
percentages of the explained, between-cell spread (Shapley / v_all). Scores are shown on the 0-100 scale
(percent of items correct; cells on the percent scale are converted, never mixed). Every interval is a
95 % percentile bootstrap; an estimate and its interval are rounded to the same number of decimals,
set by the interval's half-width (one significant digit). Score intervals resample items jointly across
cells, each task keeping its item count, and apply each cell's own aggregation (task_mean or item_mean):
``stats.ItemBootstrap.from_tables`` seeded by the study seed, the bootstrap the claims verdicts use.

Output is deterministic: two runs on the same inputs give byte-identical ``summary.md`` and figures;
only the HTML's "generated at" provenance line changes (it honours ``SOURCE_DATE_EPOCH``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reprogrid.errors import UserError
from reprogrid.catalogue import OFFLINE_TASKS, factor_catalogue, level_sort_key, level_text
from reprogrid.io import atomic_path
from reprogrid.provenance import code_version
from reprogrid.stats import ItemBootstrap, fraction_scores

TEMPLATES = Path(__file__).with_name("templates")
LEVEL = 0.95
DEFAULT_BOOTSTRAP = 1000

# Okabe & Ito (2008), safe for the common colour-vision deficiencies.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
BLUE, ORANGE, GREEN, PINK, SKY, VERMILLION, YELLOW, BLACK = OKABE_ITO
GREY = "#999999"
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P"]

# name -> (title, caption file, category) for snakemake --report; the caption files live in templates/.
FIGURES = {
    "variance_shares": ("Variance shares with 95% intervals", "variance_shares.rst", "1. Attribution"),
    "interactions": ("Two-way interactions (eta squared)", "interactions.rst", "1. Attribution"),
    "main_effects": ("Main effects: score by level of each factor", "main_effects.rst", "2. Scores"),
    "context_length": ("Score vs context length per model and quantization", "context_length.rst", "2. Scores"),
    "claims_waterfall": ("Pairwise explanation of the gap between the two claims", "claims_waterfall.rst",
                         "3. Claims"),
    "specdec": ("Speculative decoding per task", "specdec.rst", "4. Speculative decoding"),
}
TABLES = {
    "variance_shares": ("Variance shares", "table_variance_shares.rst", "1. Attribution"),
    "main_effects": ("Main effects", "table_main_effects.rst", "2. Scores"),
    "context_length": ("Score by context length", "table_context_length.rst", "2. Scores"),
    "cells": ("Cell scores", "table_cells.rst", "2. Scores"),
    "claims": ("Claims and their grid readings", "table_claims.rst", "3. Claims"),
    "specdec": ("Speculative decoding per task", "table_specdec.rst", "4. Speculative decoding"),
    "run_times": ("Run times and peak memory", "table_run_times.rst", "5. Provenance"),
    "models": ("Prepared models", "table_models.rst", "5. Provenance"),
}
CLAIMS_ONLY = {"claims_waterfall", "claims"}
SPECDEC_ONLY = {"specdec"}


def expected_outputs(cfg) -> tuple[list[str], list[str]]:
    """The figure and table names a report of this config writes (claims and specdec when configured)."""
    def keep(name: str) -> bool:
        if name in CLAIMS_ONLY:
            return bool(cfg.raw.get("claims"))
        if name in SPECDEC_ONLY:
            return bool(cfg.raw.get("specdec"))
        return True

    return [n for n in FIGURES if keep(n)], [n for n in TABLES if keep(n)]


# --------------------------------------------------------------------------------------------------
# number formatting: an estimate and its interval share their decimals


def decimals_for(lo: Any, hi: Any, scale: float = 100.0, default: int = 1, most: int = 3) -> int:
    """Decimals that show one significant digit of the interval's half-width (``default`` without one)."""
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return default
    hw = abs(float(hi) - float(lo)) * scale / 2
    if hw <= 0:
        return default
    return int(min(most, max(0, math.ceil(-math.log10(hw) - 1e-9))))


def _num(x: float, d: int, signed: bool = False) -> str:
    """``x`` with ``d`` decimals, a true minus sign and no negative zero."""
    s = f"{x:+.{d}f}" if signed else f"{x:.{d}f}"
    if float(s) == 0:
        s = f"{0:.{d}f}"
    return s.replace("-", "\u2212")


def _finite(x: Any) -> bool:
    try:
        return x is not None and np.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def fmt_range(lo: float, hi: float, d: int, scale: float = 100.0, unit: str = "") -> str:
    a, b = _num(lo * scale, d), _num(hi * scale, d)
    sep = " to " if lo < 0 or hi < 0 else "\u2013"
    return f"{a}{sep}{b}{unit}"


@dataclass
class Est:
    """A value (fraction) with an optional interval; formats itself on a 0-100 scale."""

    value: float
    lo: float | None = None
    hi: float | None = None
    unit: str = ""  # "%" for shares, "" for scores on the 0-100 scale
    signed: bool = False
    scale: float = 100.0  # display = value * scale

    @property
    def has_ci(self) -> bool:
        return _finite(self.lo) and _finite(self.hi)

    @property
    def d(self) -> int:
        return decimals_for(self.lo, self.hi, self.scale, default=1 if self.scale == 100 else 2) \
            if self.has_ci else (1 if self.scale == 100 else 2)

    @property
    def point(self) -> str:
        if not _finite(self.value):
            return "n/a"
        return _num(self.value * self.scale, self.d, self.signed) + self.unit

    @property
    def ci(self) -> str:
        return fmt_range(self.lo, self.hi, self.d, self.scale, self.unit) if self.has_ci else ""

    @property
    def full(self) -> str:
        """'18% (95% CI 15–21%)'."""
        return f"{self.point} (95% CI {self.ci})" if self.has_ci else self.point

    def __str__(self) -> str:
        return self.full


fmt_level = level_text


def fmt_bytes_mb(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def fmt_seconds(s: float) -> str:
    if not _finite(s):
        return "n/a"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


# --------------------------------------------------------------------------------------------------
# inputs


@dataclass
class Inputs:
    cfg: Any
    results: Path
    cells: pd.DataFrame
    samples: pd.DataFrame
    shares: pd.DataFrame
    shares_json: dict | None
    grid: pd.DataFrame | None = None
    findings: list[str] | None = None
    verdicts: dict | None = None
    claim_cells: pd.DataFrame | None = None
    specdec: pd.DataFrame | None = None
    disparity: dict | None = None
    manifests: dict[str, dict] = field(default_factory=dict)
    generations: dict[str, dict] = field(default_factory=dict)  # gid -> provenance
    models: dict[str, dict] = field(default_factory=dict)  # prepared key -> provenance
    benchmarks: pd.DataFrame | None = None
    checksums: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)  # section -> notes about missing inputs

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _read_parquet(path: Path, what: str, hint: str) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path} not found: {hint}", field=what)
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # corrupt file, wrong format
        raise UserError(f"cannot read {path}: {' '.join(str(exc).split())}", field=what) from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}", field="results") from None


def load_inputs(cfg, results: Path) -> Inputs:
    R = Path(results)
    cells = _read_parquet(R / "tables" / "cells.parquet", "cells", "run the score step first (reprogrid score)")
    samples = _read_parquet(R / "tables" / "samples.parquet", "samples", "run the score step first (reprogrid score)")
    shares_csv = R / "attribution" / "variance_shares.csv"
    if not shares_csv.is_file():
        raise UserError(f"{shares_csv} not found: run the attribution step first (reprogrid attribute)",
                        field="shares")
    shares = pd.read_csv(shares_csv)
    need = {"effect", "eta2", "shapley", "ci_low", "ci_high"}
    if not need <= set(shares.columns):
        raise UserError(f"{shares_csv} lacks columns {', '.join(sorted(need - set(shares.columns)))}",
                        field="shares")
    for col in ("cell_id", "score", "status"):
        if col not in cells.columns:
            raise UserError(f"the cells table has no {col!r} column", field="cells")
    if len(samples) and not {"cell_id", "item_id", "score"} <= set(samples.columns):
        raise UserError("the samples table needs cell_id, item_id and score columns", field="samples")
    shares_json_path = shares_csv.with_suffix(".json")
    inp = Inputs(cfg=cfg, results=R, cells=cells, samples=samples, shares=shares,
                 shares_json=_read_json(shares_json_path) if shares_json_path.is_file() else None)
    if inp.shares_json is None:
        inp.note("attribution", f"{_rel(shares_json_path, R)} is missing: no noise-floor p-values or seed shown "
                                "(the floor itself comes from the CSV)")
    for p in (R / "tables" / "cells.parquet", R / "tables" / "samples.parquet", shares_csv, shares_json_path):
        if p.is_file():
            inp.checksums[_rel(p, R)] = _sha256(p)

    grid_path = R / "grid" / "cells.tsv"
    if grid_path.is_file():
        inp.grid = pd.read_csv(grid_path, sep="\t")

    # claims
    if cfg.raw.get("claims"):
        d = R / "claims"
        if (d / "findings.txt").is_file():
            inp.findings = [ln for ln in (d / "findings.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
        else:
            inp.note("claims", "claims/findings.txt is missing (reprogrid claims check): no consistency findings shown")
        if (d / "verdicts.json").is_file():
            inp.verdicts = _read_json(d / "verdicts.json")
        else:
            inp.note("claims", "claims/verdicts.json is missing (reprogrid claims map): no explanations, pairwise "
                               "decomposition or reproducibility verdict shown")
        if (d / "claim_cells.csv").is_file():
            inp.claim_cells = pd.read_csv(d / "claim_cells.csv")
        for name in ("findings.txt", "verdicts.json", "claim_cells.csv"):
            if (d / name).is_file():
                inp.checksums[f"claims/{name}"] = _sha256(d / name)

    # speculative decoding
    if cfg.raw.get("specdec") or (R / "specdec").is_dir():
        d = R / "specdec"
        if (d / "specdec.parquet").is_file():
            inp.specdec = pd.read_parquet(d / "specdec.parquet")
            inp.checksums["specdec/specdec.parquet"] = _sha256(d / "specdec.parquet")
        else:
            inp.note("specdec", "specdec/specdec.parquet is missing: the speculative decoding study did not run")
        if (d / "disparity.json").is_file():
            inp.disparity = _read_json(d / "disparity.json")
        elif inp.specdec is not None:
            inp.note("specdec", "specdec/disparity.json is missing: per-task intervals computed here are not shown")

    # generations: manifests and per-run provenance
    gen_dir = R / "generations"
    for m in sorted(gen_dir.glob("*.manifest.json")) if gen_dir.is_dir() else []:
        data = _read_json(m)
        key = data.get("prepared_key") or m.name[: -len(".manifest.json")]
        inp.manifests[key] = data
        for gid in sorted(data.get("generations", {})):
            p = gen_dir / key / f"{gid}.json"
            if p.is_file():
                inp.generations[gid] = _read_json(p)
    if not inp.manifests:
        inp.note("provenance", "no generation manifests under generations/: run provenance (code version, "
                               "packages, run times per generation) is not shown")
    models_dir = R / "models"
    for p in sorted(models_dir.glob("*/reprogrid_model.json")) if models_dir.is_dir() else []:
        inp.models[p.parent.name] = _read_json(p)
    if not inp.models:
        inp.note("provenance", "no prepared-model provenance under models/: model checksums come from the "
                               "generation provenance only")

    bench = R / "benchmarks"
    rows = []
    for p in sorted(bench.rglob("*.tsv")) if bench.is_dir() else []:
        try:
            t = pd.read_csv(p, sep="\t")
        except (OSError, ValueError, pd.errors.ParserError):
            continue
        if "s" not in t.columns or not len(t):
            continue
        rel = p.relative_to(bench).with_suffix("")
        parts = rel.parts
        def last(col: str) -> float:  # the last run recorded in the file
            return float(pd.to_numeric(t[col], errors="coerce").iloc[-1]) if col in t.columns else float("nan")

        rows.append({"rule": parts[0], "target": "/".join(parts[1:]) or "", "seconds": last("s"),
                     "max_rss_mb": last("max_rss"), "cpu_time_s": last("cpu_time")})
    if rows:
        inp.benchmarks = pd.DataFrame(rows)
    else:
        inp.note("provenance", "no Snakemake benchmark TSVs under benchmarks/: run times and peak memory are not shown")
    return inp


# --------------------------------------------------------------------------------------------------
# analysis


def _level_order(cfg, factor: str, values) -> list:
    present = list(dict.fromkeys(values))
    wanted = [fmt_level(v) for v in cfg.factors.get(factor, [])]
    key = {fmt_level(v): v for v in present}
    ordered = [key[w] for w in wanted if w in key]
    rest = [v for v in present if fmt_level(v) not in wanted]
    return ordered + sorted(rest, key=level_sort_key)


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


class Report:
    """Everything the templates show, computed once from the inputs."""

    def __init__(self, inp: Inputs, n_boot: int = DEFAULT_BOOTSTRAP):
        self.inp = inp
        self.cfg = inp.cfg
        self.n_boot = n_boot
        cells = inp.cells.copy()
        cells["cell_id"] = cells["cell_id"].astype(str)
        self.cells = cells
        self.ok = cells[cells["status"].astype(str) == "ok"]
        self.failed = cells[cells["status"].astype(str) != "ok"]
        self.factors = [f for f in self.cfg.listed if f in cells.columns]
        self.varying = [f for f in self.factors if self.ok[f].nunique(dropna=True) > 1]
        if "aggregation" not in cells.columns:  # a fixed level is not a column: every cell takes it
            cells = cells.assign(aggregation=self.cfg.factors.get("aggregation", ["task_mean"])[0])
        self._boot = ItemBootstrap.from_tables(inp.samples, cells, n_boot, self.cfg.seed, LEVEL)

    def estimate(self, cell_ids) -> Est:
        """The equal-weight mean score of these cells with its item-bootstrap interval (stats.ItemBootstrap)."""
        e = self._boot.estimate(cell_ids)
        return Est(e.value, e.low, e.high)

    # ---- study ----------------------------------------------------------------------------------

    def study(self) -> dict:
        cat = factor_catalogue()
        cfg = self.cfg
        factors = []
        for f in self.factors:
            levels = _level_order(cfg, f, self.cells[f].dropna().tolist())
            factors.append({"name": f, "stage": cat[f].stage if f in cat else "?",
                            "levels": ", ".join(fmt_level(v) for v in levels), "n": len(levels),
                            "doc": cat[f].doc if f in cat else "", "varies": f in self.varying})
        fixed = [{"name": f, "level": fmt_level(cfg.factors[f][0])} for f in cfg.factors
                 if f not in cfg.listed and f in cat]
        n_runs = self.cells["generation_id"].nunique() if "generation_id" in self.cells.columns else None
        failed_runs = (self.failed["generation_id"].nunique() if "generation_id" in self.failed.columns else 0)
        s = self.inp.samples
        n_items_cell = (pd.to_numeric(self.ok["n_items"], errors="coerce") if "n_items" in self.ok.columns
                        else pd.Series(dtype=float))
        item_key = (s["task"].astype(str) + "/" + s["item_id"].astype(str)) if "task" in s.columns and len(s) else \
            s.get("item_id", pd.Series(dtype=str))
        tasks = list(cfg.ruler.get("tasks", []))
        return {
            "name": cfg.raw.get("study", "study"),
            "description": " ".join(str(cfg.raw.get("description", "")).split()),
            "factors": factors, "fixed": fixed,
            "n_cells": len(self.cells), "n_ok": len(self.ok), "n_failed": len(self.failed),
            "n_planned": len(self.inp.grid) if self.inp.grid is not None else None,
            "n_runs": n_runs, "n_failed_runs": failed_runs,
            "n_samples": len(s), "n_items": int(item_key.nunique()) if len(s) else 0,
            "items_per_cell": ("n/a" if not len(n_items_cell) else f"{int(n_items_cell.min())}"
                               if n_items_cell.min() == n_items_cell.max()
                               else f"{int(n_items_cell.min())}\u2013{int(n_items_cell.max())}"),
            "tasks": ", ".join(tasks), "n_tasks": len(tasks), "n_items_per_task": cfg.ruler.get("n_items"),
            "models": ", ".join(fmt_level(m) for m in cfg.factors.get("model", [])),
        }

    # ---- attribution ----------------------------------------------------------------------------

    def attribution(self) -> dict:
        t = self.inp.shares.copy()
        t["effect"] = t["effect"].astype(str)
        for c in ("eta2", "omega2", "shapley", "sobol_total", "ci_low", "ci_high", "noise_floor"):
            if c in t.columns:
                t[c] = pd.to_numeric(t[c], errors="coerce")
        resid = t[t["effect"].str.lower() == "residual"]
        inter = t[t["effect"].str.contains(":") & (t["effect"].str.lower() != "residual")]
        fac = t[~t["effect"].str.contains(":") & (t["effect"].str.lower() != "residual")]
        fac = fac[fac["shapley"].notna()].sort_values("shapley", ascending=False, kind="stable")
        js = self.inp.shares_json or {}
        v_all = js.get("v_all")
        if not _finite(v_all):
            v_all = float(fac["shapley"].sum()) if len(fac) else float("nan")
        noise_js = (js.get("noise_floor") or {}).get("factors") or {}
        rows = []
        for r in fac.itertuples(index=False):
            nj = noise_js.get(r.effect, {})
            floor = nj.get("noise_floor", getattr(r, "noise_floor", np.nan))
            if "above_noise" in nj:
                above = bool(nj["above_noise"])
            elif _finite(floor):
                above = bool(r.shapley > floor)
            else:
                above = None
            est = Est(r.shapley, r.ci_low if _finite(r.ci_low) else None, r.ci_high if _finite(r.ci_high) else None, "%")
            expl = Est(r.shapley / v_all if _finite(v_all) and v_all > 0 else float("nan"), unit="%")
            expl_d = est.d
            rows.append({
                "effect": r.effect, "share": est, "explained": expl,
                "explained_txt": (_num(expl.value * 100, expl_d) + "%") if _finite(expl.value) else "n/a",
                "floor": floor, "floor_txt": (_num(floor * 100, max(1, est.d)) + "%") if _finite(floor) else "n/a",
                "above": above, "p_value": nj.get("p_value"),
                "eta2": r.eta2, "omega2": getattr(r, "omega2", np.nan), "sobol_total": getattr(r, "sobol_total", np.nan),
            })
        resid_est = None
        if len(resid):
            rr = resid.iloc[0]
            resid_est = Est(float(rr["shapley"]) if _finite(rr["shapley"]) else 1 - v_all,
                            rr["ci_low"] if _finite(rr["ci_low"]) else None,
                            rr["ci_high"] if _finite(rr["ci_high"]) else None, "%")
        inter_rows = [{"effect": r.effect, "a": r.effect.split(":")[0], "b": r.effect.split(":")[1], "eta2": r.eta2,
                       "omega2": getattr(r, "omega2", np.nan)} for r in inter.itertuples(index=False)]
        inter_rows.sort(key=lambda r: -(r["eta2"] if _finite(r["eta2"]) else -1))
        boot = js.get("bootstrap") or {}
        v_iv = boot.get("v_all_interval")
        out = {
            "rows": rows, "residual": resid_est, "interactions": inter_rows,
            "v_all": Est(v_all, *(v_iv if v_iv and all(_finite(x) for x in v_iv) else (None, None)), unit="%"),
            "family": js.get("family", "gaussian"), "n_rows": js.get("n_rows"), "n_cells": js.get("n_cells"),
            "balanced": js.get("balanced"), "seed": js.get("seed"), "replicates": boot.get("replicates"),
            "permutations": (js.get("noise_floor") or {}).get("permutations"),
            "method_v": (js.get("method") or {}).get("v"),
            "has_ci": any(r["share"].has_ci for r in rows),
            "has_floor": any(_finite(r["floor"]) for r in rows),
        }
        self._attr = out
        return out

    def headline(self, a: dict) -> dict:
        rows = a["rows"]
        if not rows:
            return {"available": False, "text": "The variance shares table has no factor rows: nothing varies."}
        top = rows[0]
        runner = rows[1] if len(rows) > 1 else None
        above = [r for r in rows if r["above"]]
        h = {"available": True, "top": top, "runner": runner, "n_above": len(above),
             "none_above": a["has_floor"] and not above}
        if top["above"] is True:
            p = top["p_value"]
            perms = a.get("permutations")
            ptxt = f", permutation p = {p:.2g}" if _finite(p) else ""
            if _finite(p) and perms and abs(p * (1 + perms) - 1) < 0.01:
                ptxt += f", the smallest {perms} permutations can give"
            h["noise_txt"] = (f"It clears the noise floor: a factor with no effect gets at most {top['floor_txt']} "
                              f"at this sample size (95th percentile of label permutations{ptxt}).")
            h["noise_short"] = "clears the noise floor"
        elif top["above"] is False:
            h["noise_txt"] = ("It is indistinguishable from noise: a factor with no effect gets up to "
                              f"{top['floor_txt']} "
                              "at this sample size, so the grid cannot say this factor matters.")
            h["noise_short"] = "indistinguishable from noise"
        else:
            h["noise_txt"] = "No noise floor was computed (attribute with noise-floor permutations to get one)."
            h["noise_short"] = "noise floor not computed"
        if runner is not None:
            sep = (top["share"].has_ci and runner["share"].has_ci and top["share"].lo > runner["share"].hi)
            h["separated"] = sep
            h["runner_txt"] = (f"Runner-up: {runner['effect']}, {runner['share'].full}"
                               + ("; the two intervals do not overlap, so the ranking is clear."
                                  if sep else "; the intervals overlap, so the order of the two is not settled."
                                  if top["share"].has_ci and runner["share"].has_ci else "."))
        below = [r["effect"] for r in rows if r["above"] is False]
        h["below"] = below
        return h

    # ---- scores ----------------------------------------------------------------------------------

    def main_effects(self) -> pd.DataFrame:
        rows = []
        for f in self.varying:
            for lv in _level_order(self.cfg, f, self.ok[f].dropna().tolist()):
                ids = self.ok.loc[self.ok[f].map(fmt_level) == fmt_level(lv), "cell_id"].tolist()
                e = self.estimate(ids)
                rows.append({"factor": f, "level": fmt_level(lv), "n_cells": len(ids), "score": e.value,
                             "ci_low": e.lo, "ci_high": e.hi, "est": e})
        return pd.DataFrame(rows, columns=["factor", "level", "n_cells", "score", "ci_low", "ci_high", "est"])

    def by_context(self) -> pd.DataFrame | None:
        if "context_length" not in self.ok.columns:
            return None
        groups = [g for g in ("model", "quantization") if g in self.ok.columns]
        rows = []
        keys = (self.ok[groups].drop_duplicates() if groups else pd.DataFrame([{}]))
        order = {g: [fmt_level(v) for v in _level_order(self.cfg, g, self.ok[g].tolist())] for g in groups}
        keys = sorted((tuple(fmt_level(k[g]) for g in groups) for _, k in keys.iterrows()),
                      key=lambda t: tuple(order[g].index(v) for g, v in zip(groups, t)))
        for key in keys:
            m = pd.Series(True, index=self.ok.index)
            for g, v in zip(groups, key):
                m &= self.ok[g].map(fmt_level) == v
            sub = self.ok[m]
            for L in _level_order(self.cfg, "context_length", sub["context_length"].tolist()):
                ids = sub.loc[sub["context_length"] == L, "cell_id"].tolist()
                e = self.estimate(ids)
                rows.append({**dict(zip(groups, key)), "context_length": int(L), "n_cells": len(ids),
                             "score": e.value, "ci_low": e.lo, "ci_high": e.hi, "est": e})
        return pd.DataFrame(rows)

    def cell_table(self) -> pd.DataFrame:
        rows = []
        for r in self.cells.itertuples(index=False):
            d = r._asdict()
            e = self.estimate([d["cell_id"]]) if d["status"] == "ok" else Est(float("nan"))
            rows.append({"cell_id": d["cell_id"], **{f: fmt_level(d[f]) for f in self.factors},
                         "generation_id": d.get("generation_id", ""), "status": d["status"],
                         "score": fraction_scores(pd.DataFrame([d])).iloc[0] if d["status"] == "ok" else np.nan,
                         "ci_low": e.lo, "ci_high": e.hi, "n_items": d.get("n_items"),
                         "n_truncated": d.get("n_truncated"), "reason": d.get("reason", "") or ""})
        return pd.DataFrame(rows)

    # ---- claims ----------------------------------------------------------------------------------

    def claims(self) -> dict | None:
        if not self.cfg.raw.get("claims"):
            return None
        v = self.inp.verdicts
        out: dict[str, Any] = {"notes": self.inp.notes.get("claims", []), "findings": [], "explanations": [],
                               "pairwise": None, "repro": None, "pair": None, "available": v is not None}
        if self.inp.findings is not None:
            out["findings"] = [_split_finding(ln) for ln in self.inp.findings]
            out["findings_source"] = "claims/findings.txt"
        elif v is not None:
            out["findings"] = [{"claim": f["claim_id"], "kind": f["kind"], "message": f["message"]}
                               for f in v.get("findings", [])]
            out["findings_source"] = "claims/verdicts.json"
        if v is None:
            return out
        pair = v.get("pair") or {}
        out["pair"] = {k: _claim_txt(pair.get(k)) for k in ("low", "high") if pair.get(k)}
        for e in v.get("explanations", []):
            c = e.get("claim", {})
            best = e.get("best")
            row = {"id": c.get("id"), "model": c.get("model"), "claimed": _claim_value_txt(c),
                   "status": e.get("status"), "source": _source_txt(c.get("source")),
                   "stated": ", ".join(f"{k}={fmt_level(x)}" for k, x in (c.get("protocol") or {}).items()) or "nothing",
                   "n_readings": e.get("n_readings"), "n_consistent": e.get("n_consistent"),
                   "unverified": ", ".join(e.get("unverified") or []), "missing": "; ".join(e.get("missing") or [])}
            if best:
                be = Est(best["score"], *(best["ci"] if best.get("ci") else (None, None)))
                row["best_levels"] = ", ".join(f"{k}={fmt_level(x)}" for k, x in best["levels"].items()) or \
                    "its one matching cell"
                row["best"] = be
            if e.get("status") == "matched":
                n_c, n_r = e.get("n_consistent"), e.get("n_readings")
                which = ("the only reading consistent with it" if n_c == 1 and n_r == 1
                         else f"the only one of {n_r} readings consistent with it" if n_c == 1
                         else f"the closest of the {n_r} readings, all consistent with it" if n_c == n_r
                         else f"the closest of {n_c} consistent readings (of {n_r})")
                row["verdict"] = "explained"
                row["text"] = (f"{row['id']} ({row['claimed']}) is best explained by {row['best_levels']}: grid score "
                               f"{row['best'].full}, {which}.")
            elif e.get("status") == "unmatched":
                row["verdict"] = "not explained"
                row["text"] = (f"{row['id']} ({row['claimed']}) is not explained: no reading under its stated protocol "
                               f"reaches it; the closest is {row['best_levels']}, {row['best'].full}.")
            else:
                row["verdict"] = "the grid cannot answer"
                row["text"] = (f"{row['id']} ({row['claimed']}): the grid cannot answer: "
                               f"{row['missing'] or 'no matching cell'}.")
            out["explanations"].append(row)
        pw = v.get("pairwise") or {}
        if pw.get("available"):
            contrib = []
            for r in pw.get("contributions", []):
                contrib.append({"factor": r["factor"], "from": fmt_level(r.get("low_level")),
                                "to": fmt_level(r.get("high_level")),
                                "est": Est(r["contribution"] if _finite(r.get("contribution")) else float("nan"),
                                           r.get("ci_low") if _finite(r.get("ci_low")) else None,
                                           r.get("ci_high") if _finite(r.get("ci_high")) else None, signed=True)})
            gap = Est(pw["gap"], *(pw["gap_ci"] if pw.get("gap_ci") else (None, None)), signed=True)
            out["pairwise"] = {"available": True, "low": _pt(pw.get("low_value"), gap.d),
                               "high": _pt(pw.get("high_value"), gap.d),
                               "gap": gap, "contributions": contrib, "largest": pw.get("largest"),
                               "low_value": pw.get("low_value"), "high_value": pw.get("high_value"),
                               "low_claimed": (pair.get("low") or {}).get("value"),
                               "high_claimed": (pair.get("high") or {}).get("value"),
                               "averaged_over": ", ".join(f"{k} ({', '.join(map(fmt_level, x))})"
                                                          for k, x in (pw.get("averaged_over") or {}).items())}
        else:
            extra = ""
            if pw.get("missing_cells"):
                mc = pw["missing_cells"]
                extra = " (" + "; ".join(mc[:4]) + ("; ..." if len(mc) > 4 else "") + ")"
            out["pairwise"] = {"available": False, "reason": (pw.get("reason") or "not computed") + extra}
        rp = v.get("reproducibility") or {}
        if rp:
            status = rp.get("status")
            label = {"reproduces": "reproduces", "does_not_reproduce": "does not reproduce",
                     "depends_on_unknowns": "depends on factors the low report leaves open",
                     "undetermined": "the grid cannot answer"}.get(status, status or "unknown")
            rng_ = rp.get("range")
            iv = rp.get("interval")
            claimed = _pt(rp.get("claimed"))
            if rng_:
                d = decimals_for(*(iv if iv else rng_))
                span = (_num(rng_[0] * 100, d) if abs(rng_[0] - rng_[1]) < 1e-12
                        else fmt_range(rng_[0], rng_[1], d))
                ivs = fmt_range(iv[0], iv[1], d) if iv else ""
            else:
                span = ivs = ""
            high_id = (pair.get("high") or {}).get("id", "the high claim")
            question = (f"Does {high_id}'s score ({claimed}) reproduce with {rp.get('model')} under "
                        f"{rp.get('conditions_of')}'s stated conditions ({_protocol_txt(rp.get('conditions'))})?")
            if status == "undetermined":
                answer = f"{'; '.join(rp.get('missing') or []) or rp.get('summary', '')}."
            else:
                opens = rp.get("unknown_factors") or []
                answer = (f"The grid reads {span}"
                          + (f" (95% CI over the readings {ivs})" if ivs else "")
                          + (f" across the levels of {', '.join(opens)}, which {rp.get('conditions_of')} leaves open"
                             if opens else "") + f", against the claimed {claimed}.")
            out["repro"] = {"status": status, "label": label, "question": question, "answer": answer,
                            "summary": rp.get("summary", ""), "n_readings": len(rp.get("readings") or [])}
        mef = v.get("most_explanatory_factor") or {}
        out["most_explanatory"] = mef.get("effect") if mef.get("available") else None
        return out

    # ---- speculative decoding ---------------------------------------------------------------------

    def specdec(self) -> dict | None:
        if not self.cfg.raw.get("specdec") and self.inp.specdec is None:
            return None
        out: dict[str, Any] = {"available": self.inp.specdec is not None, "notes": self.inp.notes.get("specdec", [])}
        df = self.inp.specdec
        if df is None:
            return out
        dis = self.inp.disparity or {}
        pairs = [str(p) for p in df["pair"].drop_duplicates()] if "pair" in df.columns else [None]
        multi = len(pairs) > 1
        by_pair = dis.get("by_pair") or {}
        rows = []
        for pair in pairs:
            sub = df if pair is None else df[df["pair"].astype(str) == pair]
            # one pair: the pooled groups; several: each pair's own (pooling them would mix verifiers)
            pdis = ((by_pair.get(pair) or {}).get("speedup") or {}) if multi else dis
            groups = pdis.get("groups") or {}
            for task, g in sub.groupby("task", sort=True):
                gd = groups.get(str(task), {})
                sp = Est(float(gd.get("mean", pd.to_numeric(g["speedup_measured"], errors="coerce").mean())),
                         gd.get("ci_low"), gd.get("ci_high"), unit="\u00d7", scale=1.0)
                rows.append({"pair": pair, "task": str(task), "label": f"{pair}: {task}" if multi else str(task),
                             "n": len(g), "speedup": sp,
                             # the block-cost prediction E/(gamma c + r) when measured (CPU verification of a
                             # gamma+1 block costs r single steps), else the textbook E/(gamma c + 1)
                             "speedup_predicted": float(pd.to_numeric(
                                 g["speedup_predicted_block" if "speedup_predicted_block" in g.columns
                                   else "speedup_predicted"], errors="coerce").mean()),
                             "alpha_empirical": float(pd.to_numeric(g["alpha_empirical"], errors="coerce").mean()),
                             "alpha_analytic": float(pd.to_numeric(g["alpha_analytic"], errors="coerce").mean()),
                             "tokens_per_step": float(pd.to_numeric(g["tokens_per_step"], errors="coerce").mean()),
                             "expected_tokens_per_step": float(pd.to_numeric(g["expected_tokens_per_step"],
                                                                             errors="coerce").mean()),
                             "cross_entropy": float(pd.to_numeric(g.get("cross_entropy"), errors="coerce").mean())
                             if "cross_entropy" in g.columns else float("nan")})
        out["rows"] = rows
        out["multi_pair"] = multi
        out["predicted_formula"] = ("E/(\u03b3c+r)" if "speedup_predicted_block" in df.columns
                                    else "E/(\u03b3c+1)")
        out["n_prompts"] = len(df)
        out["gamma"] = ", ".join(str(x) for x in sorted(df["gamma"].dropna().unique())) if "gamma" in df.columns else "?"
        out["decoding"] = (", ".join(sorted(map(str, df["decoding"].dropna().unique())))
                           if "decoding" in df.columns else "?")
        if dis:
            out["disparity"] = _format_disparity(dis)
            if multi:
                out["pair_disparity"] = [{"pair": p, **_format_disparity(
                    {**((by_pair.get(p) or {}).get("speedup") or {}), "ce_variance": None})}
                    for p in pairs if (by_pair.get(p) or {}).get("speedup")]
        return out

    # ---- caveats ---------------------------------------------------------------------------------

    def caveats(self, attr: dict) -> dict:
        s = self.inp.samples
        cav: dict[str, Any] = {}
        # truncation: count model outputs (generation x task x item), not cell rows
        if "truncated" in s.columns and len(s):
            t = s[s["truncated"].astype(bool)]
            keys = [c for c in ("generation_id", "task", "item_id") if c in t.columns]
            n_out = len(t.drop_duplicates(keys)) if keys else len(t)
            total = len(s.drop_duplicates(keys)) if keys else len(s)
            by = []
            if n_out:
                cols = [c for c in ("model", "quantization", "context_length", "chat_template") if c in t.columns]
                if cols:
                    g = t.drop_duplicates(keys).groupby(cols, sort=True).size()
                    by = [{"levels": ", ".join(f"{c}={fmt_level(v)}"
                                               for c, v in zip(cols, k if isinstance(k, tuple) else (k,))),
                           "n": int(n)} for k, n in g.items()]
            cav["truncated"] = {"n_outputs": n_out, "n_rows": len(t), "total": total, "by": by,
                                "n_cells": int(t["cell_id"].nunique())}
        else:
            cav["truncated"] = None
        # failed cells grouped by reason
        failed = []
        if len(self.failed):
            f = self.failed.assign(reason=self.failed.get("reason", pd.Series("", index=self.failed.index))
                                   .fillna("").astype(str).replace("", "no reason recorded"))
            for reason, g in f.groupby("reason", sort=True):
                runs = g["generation_id"].nunique() if "generation_id" in g.columns else None
                gen_cols = [c for c in ("model", "quantization", "context_length", "chat_template") if c in g.columns]
                where = sorted({", ".join(f"{c}={fmt_level(r[c])}" for c in gen_cols) for _, r in g.iterrows()})
                failed.append({"reason": reason, "n_cells": len(g), "n_runs": runs, "where": where})
        cav["failed"] = failed
        # tasks
        tasks = list(self.cfg.ruler.get("tasks", []))
        online = [t for t in tasks if t not in OFFLINE_TASKS]
        seen = set(s["task"].astype(str)) if "task" in s.columns and len(s) else set()
        cav["tasks"] = {"online": online, "asset_dir": self.cfg.ruler.get("asset_dir"),
                        "absent": [t for t in tasks if seen and t not in seen], "offline_list": ", ".join(OFFLINE_TASKS)}
        # noise floor
        cav["below_noise"] = [r["effect"] for r in attr["rows"] if r["above"] is False]
        cav["permutations"] = attr.get("permutations")
        # small n
        n_items = pd.to_numeric(self.ok.get("n_items", pd.Series(dtype=float)), errors="coerce").dropna()
        if len(n_items):
            n_min = int(n_items.min())
            cav["small_n"] = {"n": n_min, "se": 50 / math.sqrt(n_min) if n_min > 0 else float("nan"),
                              "small": n_min < 100}
        else:
            cav["small_n"] = None
        cav["unbalanced"] = attr.get("balanced") is False
        cav["scales"] = "scale" in self.cells.columns and self.cells["scale"].nunique() > 1
        # provenance consistency
        shas = {g.get("config_sha256") for g in self.inp.generations.values() if g.get("config_sha256")}
        cav["other_config"] = sorted(x for x in shas if x != self.cfg.sha256)
        codes = sorted({g.get("code_version") for g in self.inp.generations.values() if g.get("code_version")})
        cav["dirty_code"] = [c for c in codes if str(c).endswith("+dirty") or c == "unknown"]
        cav["n_code_versions"] = len(codes)
        cav["missing_inputs"] = [n for sec in ("attribution", "claims", "specdec", "provenance")
                                 for n in self.inp.notes.get(sec, [])]
        return cav

    # ---- provenance ------------------------------------------------------------------------------

    def provenance(self, attr: dict) -> dict:
        gens = self.inp.generations
        codes = sorted({str(g.get("code_version")) for g in gens.values() if g.get("code_version")})
        pkgs: dict[str, set] = {}
        for g in gens.values():
            for k, v in (g.get("packages") or {}).items():
                pkgs.setdefault(k, set()).add(str(v))
        packages = [{"name": k, "version": ", ".join(sorted(v))} for k, v in sorted(pkgs.items())]
        models = []
        keys = sorted(set(self.inp.models) | set(self.inp.manifests))
        from_gen = {}
        for g in gens.values():
            pk = (g.get("generation") or {}).get("prepared_key")
            if pk and pk not in from_gen:
                from_gen[pk] = g.get("model") or {}
        for k in keys:
            m = self.inp.models.get(k) or from_gen.get(k) or {}
            q = m.get("quantization") or {}
            models.append({"key": k, "source": m.get("source", ""), "upstream": m.get("upstream", ""),
                           "sha256": m.get("sha256", ""), "weights_sha256": m.get("weights_sha256", ""),
                           "tokenizer_sha256": m.get("tokenizer_sha256", ""), "method": q.get("method", ""),
                           "kl": q.get("kl_to_source"), "top1": q.get("top1_agreement"),
                           "ppl": q.get("ppl"), "ppl_source": q.get("ppl_source")})
        runs = []
        if self.inp.benchmarks is not None:
            b = self.inp.benchmarks.sort_values(["rule", "target"], kind="stable")
            for r in b.itertuples(index=False):
                runs.append({"rule": r.rule, "target": r.target, "time": fmt_seconds(r.seconds),
                             "seconds": r.seconds, "rss": fmt_bytes_mb(r.max_rss_mb) if _finite(r.max_rss_mb) else "n/a",
                             "max_rss_mb": r.max_rss_mb})
            total = float(b["seconds"].sum())
        else:
            total = None
        gen_secs = [float(g["seconds"]) for g in gens.values() if _finite(g.get("seconds"))]
        data_seeds = sorted({str((g.get("seeds") or {}).get("data_seed")) for g in gens.values()
                             if (g.get("seeds") or {}).get("data_seed") is not None})
        manif = []
        for k, m in sorted(self.inp.manifests.items()):
            st = m.get("generations", {})
            n_ok = sum(1 for x in st.values() if x.get("status") == "ok")
            manif.append({"key": k, "ok": n_ok, "failed": len(st) - n_ok,
                          "resumed": sum(1 for x in st.values() if x.get("resumed"))})
        seeds = [f"study seed {self.cfg.seed}"]
        if attr.get("seed") is not None:
            bits = [f"{attr['replicates']} bootstrap replicates" if attr.get("replicates") is not None else None,
                    f"{attr['permutations']} noise-floor permutations" if attr.get("permutations") is not None else None]
            bits = [b for b in bits if b]
            seeds.append(f"attribution seed {attr['seed']}" + (f" ({', '.join(bits)})" if bits else ""))
        else:
            seeds.append("attribution seed not recorded (no variance_shares.json)")
        seeds.append("RULER data seed " + (", ".join(data_seeds) or
                                           fmt_level(self.cfg.factors.get("data_seed", ["?"])[0])))
        seeds.append(f"report intervals: {self.n_boot} item-bootstrap replicates, seed {self.cfg.seed}"
                     if self.n_boot else "report intervals: none (--bootstrap 0)")
        if (self.inp.verdicts or {}).get("interval_method"):
            seeds.append(f"claims intervals: {self.inp.verdicts['interval_method']}")
        return {
            "seeds_txt": "; ".join(seeds),
            "config_path": str(self.cfg.path), "config_sha256": self.cfg.sha256,
            "code_versions": codes, "report_code_version": code_version(), "packages": packages,
            "models": models, "runs": runs, "total_time": fmt_seconds(total) if total is not None else None,
            "generation_time": fmt_seconds(sum(gen_secs)) if gen_secs else None, "n_generation_records": len(gens),
            "seeds": {"study": self.cfg.seed, "attribution": attr.get("seed"),
                      "attribution_bootstrap": attr.get("replicates"),
                      "noise_permutations": attr.get("permutations"), "report_bootstrap": self.n_boot,
                      "data_seeds": ", ".join(data_seeds) or fmt_level(self.cfg.factors.get("data_seed", ["?"])[0]),
                      "claims_intervals": (self.inp.verdicts or {}).get("interval_method")},
            "checksums": [{"file": k, "sha256": v} for k, v in sorted(self.inp.checksums.items())],
            "manifests": manif,
        }


def _split_finding(line: str) -> dict:
    parts = [p.strip() for p in line.split(": ", 3)]
    if len(parts) == 4:
        return {"file": parts[0], "claim": parts[1], "kind": parts[2], "message": parts[3]}
    if len(parts) == 3:
        return {"file": "", "claim": parts[0], "kind": parts[1], "message": parts[2]}
    return {"file": "", "claim": "", "kind": "", "message": line.strip()}


def _pt(x: Any, d: int = 1) -> str:
    return _num(float(x) * 100, d) if _finite(x) else "n/a"


def _claim_value_txt(c: dict) -> str:
    if not c:
        return "?"
    rep = c.get("reported")
    if rep is None:
        return _pt(c.get("value"))
    return f"{rep:g}" + ("%" if c.get("scale") == "percent" else "")


def _claim_txt(c: dict | None) -> dict:
    c = c or {}
    return {"id": c.get("id", "?"), "model": c.get("model", "?"), "value": _claim_value_txt(c),
            "protocol": _protocol_txt(c.get("protocol")), "source": _source_txt(c.get("source"))}


def _protocol_txt(p: dict | None) -> str:
    return ", ".join(f"{k}={fmt_level(v)}" for k, v in (p or {}).items()) or "nothing stated"


def _source_txt(s: Any) -> str:
    if isinstance(s, str):
        return s
    if not isinstance(s, dict):
        return ""
    bits = [s.get("paper"), f"arXiv:{s['arxiv']}" if s.get("arxiv") else None, s.get("table"), s.get("section")]
    return ", ".join(str(b) for b in bits if b)


# --------------------------------------------------------------------------------------------------
# figures


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
            ax.errorbar(vals[has], y[has], xerr=[vals[has] - lo[has], hi[has] - vals[has]], fmt="none",
                        ecolor=BLACK, elinewidth=1.2, capsize=4, label="95% bootstrap interval")
        fl = np.array([r["floor"] * 100 if _finite(r["floor"]) else np.nan for r in rows])
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
    inter = {(r["a"], r["b"]): r["eta2"] for r in attr["interactions"] if _finite(r["eta2"])}
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
        _bar_label(ax, 0, low, _num(low, dg))
        run = low
        tops = [low, high]
        for i, c in enumerate(contrib, start=1):
            v = c["est"].value * 100 if _finite(c["est"].value) else 0.0
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
        _bar_label(ax, n - 1, high, _num(high, dg))
        labels.append("high claim's\nbest cell")
        drawn = False
        for xi, claimed in ((0, pw.get("low_claimed")), (n - 1, pw.get("high_claimed"))):
            if _finite(claimed):
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
        alt = (f"Waterfall from {_num(low, dg)} to {_num(high, dg)}: "
               + "; ".join(f"{c['factor']} {c['est'].full}" for c in contrib))
        return _save(fig, name, title, alt)


def _bar_label(ax, x: float, y: float, text: str) -> None:
    """The value of a total bar, halfway up inside it (clear of the dashed claimed-value marker)."""
    if y > 12:
        ax.text(x, y / 2, text, ha="center", va="center", fontsize=10, color="white", fontweight="bold")
    else:
        ax.text(x, y + 1, text, ha="center", va="bottom", fontsize=9)


def _format_disparity(dis: dict) -> dict:
    """A disparity.json entry (max/min ratio, CV, their intervals) as the report prints it."""
    r, rci = dis.get("max_min_ratio"), dis.get("max_min_ratio_ci") or [None, None]
    cv, cvci = dis.get("cv"), dis.get("cv_ci") or [None, None]
    dr = decimals_for(*rci, scale=1, default=2) if all(_finite(x) for x in rci) else 2
    dc = decimals_for(*cvci, scale=1, default=2) if all(_finite(x) for x in cvci) else 2
    return {
        "value": dis.get("value"), "max_group": dis.get("max_group"), "min_group": dis.get("min_group"),
        "ratio": f"{r:.{dr}f}" if _finite(r) else "n/a",
        "ratio_ci": f"{rci[0]:.{dr}f}\u2013{rci[1]:.{dr}f}" if all(_finite(x) for x in rci) else "",
        "cv": f"{cv:.{dc}f}" if _finite(cv) else "n/a",
        "cv_ci": f"{cvci[0]:.{dc}f}\u2013{cvci[1]:.{dc}f}" if all(_finite(x) for x in cvci) else "",
        "ce_variance": f"{dis['ce_variance']:.4f}" if _finite(dis.get("ce_variance")) else None,
        "ce_definition": dis.get("ce_variance_definition", ""), "n_boot": dis.get("n_boot"),
    }


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


# --------------------------------------------------------------------------------------------------
# tables (CSV for snakemake --report; fraction scale for scores and shares, as the pipeline stores them)


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def build_tables(rep: Report, attr: dict, me: pd.DataFrame, ctx: pd.DataFrame | None, claims: dict | None,
                 sd: dict | None, prov: dict) -> dict[str, pd.DataFrame]:
    t = {}
    rows = [{"effect": r["effect"], "shapley": r["share"].value, "ci_low": r["share"].lo, "ci_high": r["share"].hi,
             "share_of_explained": r["explained"].value, "noise_floor": r["floor"], "above_noise": r["above"],
             "p_value": r["p_value"], "eta2": r["eta2"], "omega2": r["omega2"], "sobol_total": r["sobol_total"]}
            for r in attr["rows"]]
    if attr["residual"] is not None:
        rs = attr["residual"]
        rows.append({"effect": "residual", "shapley": rs.value, "ci_low": rs.lo, "ci_high": rs.hi})
    rows += [{"effect": r["effect"], "eta2": r["eta2"], "omega2": r["omega2"]} for r in attr["interactions"]]
    t["variance_shares"] = pd.DataFrame(rows, columns=["effect", "shapley", "ci_low", "ci_high", "share_of_explained",
                                                       "noise_floor", "above_noise", "p_value", "eta2", "omega2",
                                                       "sobol_total"])
    t["main_effects"] = me.drop(columns=["est"])
    t["context_length"] = (ctx.drop(columns=["est"]) if ctx is not None and len(ctx) else
                           pd.DataFrame(columns=["context_length", "n_cells", "score", "ci_low", "ci_high"]))
    t["cells"] = rep.cell_table()
    if claims is not None:
        if rep.inp.claim_cells is not None:
            t["claims"] = rep.inp.claim_cells
        else:
            t["claims"] = pd.DataFrame([{k: (v.value if isinstance(v, Est) else v) for k, v in e.items()}
                                        for e in claims.get("explanations", [])])
    if sd is not None:
        t["specdec"] = pd.DataFrame([{**{k: v for k, v in r.items() if k not in ("speedup", "label")},
                                      "speedup_measured": r["speedup"].value,
                                      "speedup_ci_low": r["speedup"].lo if r["speedup"].has_ci else np.nan,
                                      "speedup_ci_high": r["speedup"].hi if r["speedup"].has_ci else np.nan}
                                     for r in sd.get("rows", [])])
    t["run_times"] = pd.DataFrame([{k: r[k] for k in ("rule", "target", "seconds", "max_rss_mb")} for r in prov["runs"]],
                                  columns=["rule", "target", "seconds", "max_rss_mb"])
    t["models"] = pd.DataFrame(prov["models"], columns=["key", "source", "upstream", "sha256", "weights_sha256",
                                                         "tokenizer_sha256", "method", "kl", "top1", "ppl", "ppl_source"])
    return t


# --------------------------------------------------------------------------------------------------
# rendering


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
    env.filters["lvl"] = fmt_level
    env.filters["pct"] = lambda x, d=1: (_num(float(x) * 100, d) + "%") if _finite(x) else "n/a"
    env.filters["num"] = lambda x, d=2: _num(float(x), d) if _finite(x) else "n/a"
    env.filters["pt"] = _pt
    return env


def _generated_at() -> str:
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    t = (_dt.datetime.fromtimestamp(int(sde), tz=_dt.timezone.utc) if sde and sde.isdigit()
         else _dt.datetime.now(tz=_dt.timezone.utc))
    return t.strftime("%Y-%m-%d %H:%M UTC")


def build_report(cfg, results: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 n_boot: int = DEFAULT_BOOTSTRAP) -> dict[str, Path]:
    """Read the results, write summary.md, index.html, figures/*.png and tables/*.csv; return their paths."""
    results = Path(results)
    out = Path(out_dir) if out_dir else results / "report"
    inp = load_inputs(cfg, results)
    rep = Report(inp, n_boot=n_boot)
    study = rep.study()
    attr = rep.attribution()
    head = rep.headline(attr)
    me = rep.main_effects()
    ctx = rep.by_context()
    claims = rep.claims()
    sd = rep.specdec()
    cav = rep.caveats(attr)
    prov = rep.provenance(attr)

    fig_names, table_names = expected_outputs(cfg)
    figs = {
        "variance_shares": fig_variance_shares(attr),
        "interactions": fig_interactions(attr, rep.varying),
        "main_effects": fig_main_effects(me),
        "context_length": fig_context(ctx, "context_length" in rep.varying),
    }
    if "claims_waterfall" in fig_names:
        figs["claims_waterfall"] = fig_waterfall(claims.get("pairwise") if claims else None)
    if "specdec" in fig_names:
        figs["specdec"] = fig_specdec(sd)
    tables = build_tables(rep, attr, me, ctx, claims, sd, prov)

    me_rows = [{"factor": r.factor, "level": r.level, "n_cells": r.n_cells, "est": r.est}
               for r in me.itertuples(index=False)]
    ctx_rows = ([{**{g: r[g] for g in ("model", "quantization") if g in ctx.columns},
                  "context_length": r["context_length"], "n_cells": r["n_cells"], "est": r["est"]}
                 for _, r in ctx.iterrows()] if ctx is not None and len(ctx) else [])
    ctx_groups = [g for g in ("model", "quantization") if ctx is not None and g in ctx.columns]
    context = {
        "study": study, "attr": attr, "head": head, "main_effects": me_rows, "ctx_rows": ctx_rows,
        "ctx_groups": ctx_groups, "ctx_varies": "context_length" in rep.varying, "claims": claims, "specdec": sd,
        "caveats": cav, "prov": prov, "figures": figs, "notes": inp.notes, "level": "95%",
        "n_boot": n_boot, "generated_at": _generated_at(),
        "config_name": Path(cfg.path).name,
    }
    env = _env()
    md = env.get_template("summary.md.j2").render(**context)
    html = env.get_template("report.html.j2").render(**context)
    paths = {"summary": out / "summary.md", "html": out / "index.html"}
    for name, fig in figs.items():
        paths[f"figure:{name}"] = _write(out / "figures" / f"{name}.png", fig.png)
    for name in table_names:
        df = tables.get(name)
        paths[f"table:{name}"] = _write(out / "tables" / f"{name}.csv", _csv(df if df is not None else pd.DataFrame()))
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
