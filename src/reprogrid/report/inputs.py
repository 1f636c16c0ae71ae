"""What the report reads from a finished results folder (every path from :class:`reprogrid.layout.Layout`).

Required: the cells and samples tables and the variance shares CSV (its JSON beside it is read when
present). Everything else (claims, speculative decoding, generation manifests and provenance,
prepared-model provenance, benchmark TSVs) is optional: a missing input becomes a note in its section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from reprogrid.errors import UserError
from reprogrid.io import read_json, read_table, sha256_file
from reprogrid.layout import Layout

SCORE_HINT = "run the score step first (reprogrid score)"
SHARES_COLUMNS = {"effect", "eta2", "shapley", "ci_low", "ci_high"}


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
    published: pd.DataFrame | None = None
    specdec: pd.DataFrame | None = None
    disparity: dict | None = None
    mitigation: dict | None = None  # reprogrid specdec mitigate's mitigation.json
    pitfalls: dict | None = None
    design: dict | None = None  # reprogrid estimate's design_shares.json (fractional and adaptive designs)
    components: dict | None = None
    manifests: dict[str, dict] = field(default_factory=dict)
    generations: dict[str, dict] = field(default_factory=dict)  # gid -> provenance
    models: dict[str, dict] = field(default_factory=dict)  # prepared key -> provenance
    benchmarks: pd.DataFrame | None = None
    checksums: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)  # section -> notes about missing inputs

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)


def load_inputs(cfg, results: str | Path) -> Inputs:
    """Read everything the report shows from ``results``; a missing required table is a UserError."""
    L = Layout(results)
    inp = _required(cfg, L)
    if Path(L.grid).is_file():
        inp.grid = read_table(L.grid, what="grid")
    if cfg.raw.get("claims"):
        _claims(inp, L)
    if cfg.raw.get("specdec") or Path(L.specdec_dir).is_dir():
        _specdec(inp, L)
    if cfg.raw.get("pitfalls"):
        inp.pitfalls = _optional_json(inp, L, L.pitfalls_json, "pitfalls", "the pitfalls step did not run")
    if (cfg.raw.get("design") or {}).get("type", "full") != "full":
        inp.design = _optional_json(inp, L, L.design_shares_json, "design", "the estimate step did not run")
    inp.components = _optional_json(inp, L, L.variance_components_json)
    _generations(inp, L)
    _models(inp, L)
    _benchmarks(inp, L)
    return inp


def _read_json(path: str | Path) -> Any:
    return read_json(path, what="results")


def _checksum(inp: Inputs, L: Layout, *paths: str) -> None:
    for p in paths:
        if Path(p).is_file():
            inp.checksums[L.rel(p)] = sha256_file(p)


def _glob(L: Layout, pattern: str) -> list[Path]:
    """The files matching a layout path with ``*`` in place of an argument, sorted."""
    return sorted(L.root.glob(L.rel(pattern)))


def _table(path: str, what: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise UserError(f"{path} not found: {SCORE_HINT}", field=what)
    return read_table(path, what=what)


def _required(cfg, L: Layout) -> Inputs:
    cells = _table(L.cells, "cells")
    samples = _table(L.samples, "samples")
    if not Path(L.shares).is_file():
        raise UserError(f"{L.shares} not found: run the attribution step first (reprogrid attribute)",
                        field="shares")
    shares = read_table(L.shares, what="shares")
    if not SHARES_COLUMNS <= set(shares.columns):
        raise UserError(f"{L.shares} lacks columns {', '.join(sorted(SHARES_COLUMNS - set(shares.columns)))}",
                        field="shares")
    for col in ("cell_id", "score", "status"):
        if col not in cells.columns:
            raise UserError(f"the cells table has no {col!r} column", field="cells")
    if len(samples) and not {"cell_id", "item_id", "score"} <= set(samples.columns):
        raise UserError("the samples table needs cell_id, item_id and score columns", field="samples")
    has_json = Path(L.shares_json).is_file()
    inp = Inputs(cfg=cfg, results=L.root, cells=cells, samples=samples, shares=shares,
                 shares_json=_read_json(L.shares_json) if has_json else None)
    if not has_json:
        inp.note("attribution", f"{L.rel(L.shares_json)} is missing: no noise-floor p-values or seed shown "
                                "(the floor itself comes from the CSV)")
    _checksum(inp, L, L.cells, L.samples, L.shares, L.shares_json)
    return inp


def _claims(inp: Inputs, L: Layout) -> None:
    if Path(L.findings).is_file():
        text = Path(L.findings).read_text(encoding="utf-8")
        inp.findings = [ln for ln in text.splitlines() if ln.strip()]
    else:
        inp.note("claims", f"{L.rel(L.findings)} is missing (reprogrid claims check): no consistency findings "
                           "shown")
    if Path(L.verdicts).is_file():
        inp.verdicts = _read_json(L.verdicts)
    else:
        inp.note("claims", f"{L.rel(L.verdicts)} is missing (reprogrid claims map): no explanations, pairwise "
                           "decomposition or reproducibility verdict shown")
    if Path(L.claim_cells).is_file():
        inp.claim_cells = read_table(L.claim_cells, what="claim cells")
    _checksum(inp, L, L.findings, L.verdicts, L.claim_cells)
    if Path(L.published).is_file():
        inp.published = read_table(L.published, what="published record")
        _checksum(inp, L, L.published)


def _optional_json(inp: Inputs, L: Layout, path: str, section: str | None = None, why: str = "") -> Any:
    """An optional JSON input, checksummed when present; when absent, None and (with a section) a note."""
    if Path(path).is_file():
        _checksum(inp, L, path)
        return _read_json(path)
    if section:
        inp.note(section, f"{L.rel(path)} is missing: {why}")
    return None


def _specdec(inp: Inputs, L: Layout) -> None:
    if Path(L.specdec_table).is_file():
        inp.specdec = read_table(L.specdec_table, what="specdec")
        _checksum(inp, L, L.specdec_table)
    else:
        inp.note("specdec", f"{L.rel(L.specdec_table)} is missing: the speculative decoding study did not run")
    if Path(L.specdec_disparity).is_file():
        inp.disparity = _read_json(L.specdec_disparity)
    elif inp.specdec is not None:
        inp.note("specdec", f"{L.rel(L.specdec_disparity)} is missing: per-task intervals computed here are "
                            "not shown")
    if (inp.cfg.raw.get("specdec") or {}).get("mitigation") or Path(L.specdec_mitigation).is_file():
        inp.mitigation = _optional_json(inp, L, L.specdec_mitigation, "specdec",
                                        "the mitigation step (reprogrid specdec mitigate) did not run")


def _generations(inp: Inputs, L: Layout) -> None:
    """Generation manifests (one per prepared model) and the provenance of each generation they list."""
    suffix = Path(L.generation_manifest("")).name
    for m in _glob(L, L.generation_manifest("*")):
        data = _read_json(m)
        key = data.get("prepared_key") or m.name[: -len(suffix)]
        inp.manifests[key] = data
        for gid in sorted(data.get("generations", {})):
            p = Path(L.generation_provenance(key, gid))
            if p.is_file():
                inp.generations[gid] = _read_json(p)
    if not inp.manifests:
        inp.note("provenance", f"no generation manifests under {L.rel(L.generations_root)}/: run provenance "
                               "(code version, packages, run times per generation) is not shown")


def _models(inp: Inputs, L: Layout) -> None:
    for p in _glob(L, L.prepared_model_info("*")):
        inp.models[p.parent.name] = _read_json(p)
    if not inp.models:
        inp.note("provenance", "no prepared-model provenance under models/: model checksums come from the "
                               "generation provenance only")


def _last(t: pd.DataFrame, col: str) -> float:
    """The last run recorded in a benchmark file."""
    return float(pd.to_numeric(t[col], errors="coerce").iloc[-1]) if col in t.columns else float("nan")


def _benchmarks(inp: Inputs, L: Layout) -> None:
    """Snakemake benchmark TSVs: ``benchmarks/<rule>[/<target>].tsv`` (:meth:`Layout.benchmark`)."""
    bench = Path(L.benchmarks_root)
    rows = []
    for p in sorted(bench.rglob("*.tsv")) if bench.is_dir() else []:
        try:
            t = read_table(p, what="benchmark")
        except UserError:
            continue
        if "s" not in t.columns or not len(t):
            continue
        parts = p.relative_to(bench).with_suffix("").parts
        rows.append({"rule": parts[0], "target": "/".join(parts[1:]) or "", "seconds": _last(t, "s"),
                     "max_rss_mb": _last(t, "max_rss"), "cpu_time_s": _last(t, "cpu_time")})
    if rows:
        inp.benchmarks = pd.DataFrame(rows)
    else:
        inp.note("provenance", f"no Snakemake benchmark TSVs under {L.rel(L.benchmarks_root)}/: run times and "
                               "peak memory are not shown")
