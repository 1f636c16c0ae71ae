"""Where every artefact of a study lives under its results folder: the one home of the layout.

The rules (``rules/*.smk``) take their paths from here, with Snakemake wildcards in braces when an
argument is left at its default (``Layout("results").generation_manifest()`` is
``results/generations/{pkey}.manifest.json``); the stages and the report read the same paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def _w(name: str) -> str:
    return "{" + name + "}"


def docs_file(docs_root: str | Path, task: str = _w("task"), length=_w("length"), tok: str = _w("tok"),
              seed=_w("seed")) -> str:
    """RULER docs of one (task, length, sizing tokenizer, seed) under a docs root."""
    return str(Path(docs_root, str(task), f"L{length}", str(tok), f"seed{seed}.parquet"))


@dataclass(frozen=True)
class Layout:
    root: Path

    def __init__(self, root: str | Path = "results"):
        object.__setattr__(self, "root", Path(root))

    def _p(self, *parts: str) -> str:
        return str(self.root.joinpath(*parts))

    # --- grid -----------------------------------------------------------------------------------
    @property
    def grid(self) -> str:
        return self._p("grid", "cells.tsv")

    @property
    def aliases(self) -> str:
        """The alias structure of a fractional design (next to cells.tsv)."""
        return self._p("grid", "aliases.json")

    @property
    def design_rounds(self) -> str:
        """The follow-up rounds of an adaptive design (`reprogrid adapt`); part of the grid's definition."""
        return self._p("grid", "rounds.json")

    # --- models, tokenizers, docs ----------------------------------------------------------------
    def gguf_cache(self, file: str = _w("file")) -> str:
        return self._p("cache", "gguf", file if file.endswith(".gguf") or file.startswith("{") else file)

    def embedded_gguf(self, file: str) -> str:
        return self._p("cache", "gguf", file)

    def prepared_model(self, pkey: str = _w("pkey")) -> str:
        return self._p("models", pkey)

    def prepared_model_info(self, pkey: str = _w("pkey")) -> str:
        """The provenance JSON inside a prepared model's folder (source, checksums, quantization)."""
        return self._p("models", pkey, "reprogrid_model.json")

    def tokenizer(self, tok: str = _w("tok")) -> str:
        return self._p("tokenizers", tok)

    @property
    def docs_root(self) -> str:
        return self._p("ruler")

    def docs(self, task: str = _w("task"), length=_w("length"), tok: str = _w("tok"), seed=_w("seed")) -> str:
        return docs_file(self.docs_root, task, length, tok, seed)

    # --- generations ---------------------------------------------------------------------------
    @property
    def generations_root(self) -> str:
        return self._p("generations")

    def generation_manifest(self, pkey: str = _w("pkey")) -> str:
        return self._p("generations", f"{pkey}.manifest.json")

    def generation_dir(self, pkey: str = _w("pkey")) -> str:
        return self._p("generations", pkey)

    def generation_records(self, pkey: str, gid: str) -> str:
        return self._p("generations", pkey, f"{gid}.parquet")

    def generation_provenance(self, pkey: str, gid: str) -> str:
        return self._p("generations", pkey, f"{gid}.json")

    @property
    def lm_eval_cache(self) -> str:
        return self._p("generations", "lm_eval_cache")

    # --- tables, analyses ------------------------------------------------------------------------
    @property
    def samples(self) -> str:
        return self._p("tables", "samples.parquet")

    @property
    def cells(self) -> str:
        return self._p("tables", "cells.parquet")

    @property
    def tables_provenance(self) -> str:
        return self._p("tables", "provenance.json")

    @property
    def attribution_dir(self) -> str:
        return self._p("attribution")

    @property
    def shares(self) -> str:
        return self._p("attribution", "variance_shares.csv")

    @property
    def shares_json(self) -> str:
        return self._p("attribution", "variance_shares.json")

    @property
    def design_dir(self) -> str:
        """`reprogrid estimate` on a fractional design: model-based shares, predicted cells, held-out check."""
        return self._p("attribution", "design")

    @property
    def design_shares(self) -> str:
        return self._p("attribution", "design", "design_shares.csv")

    @property
    def design_shares_json(self) -> str:
        return self._p("attribution", "design", "design_shares.json")

    @property
    def predicted_cells(self) -> str:
        return self._p("attribution", "design", "predicted_cells.csv")

    @property
    def holdout(self) -> str:
        return self._p("attribution", "design", "holdout.csv")

    @property
    def variance_components(self) -> str:
        return self._p("attribution", "variance_components.csv")

    @property
    def variance_components_json(self) -> str:
        return self._p("attribution", "variance_components.json")

    @property
    def claims_dir(self) -> str:
        return self._p("claims")

    @property
    def findings(self) -> str:
        return self._p("claims", "findings.txt")

    @property
    def claim_cells(self) -> str:
        return self._p("claims", "claim_cells.csv")

    @property
    def verdicts(self) -> str:
        return self._p("claims", "verdicts.json")

    @property
    def published(self) -> str:
        """The published record (every claim and component) placed on the grid's factors."""
        return self._p("claims", "published.csv")

    # --- pitfalls ------------------------------------------------------------------------------
    @property
    def pitfalls_table(self) -> str:
        return self._p("pitfalls", "pitfalls.csv")

    @property
    def pitfalls_json(self) -> str:
        return self._p("pitfalls", "pitfalls.json")

    # --- report -------------------------------------------------------------------------------
    @property
    def report_dir(self) -> str:
        return self._p("report")

    @property
    def report_md(self) -> str:
        return self._p("report", "summary.md")

    @property
    def report_html(self) -> str:
        return self._p("report", "index.html")

    def report_figure(self, name: str) -> str:
        return self._p("report", "figures", f"{name}.png")

    def report_table(self, name: str) -> str:
        return self._p("report", "tables", f"{name}.csv")

    # --- speculative decoding ------------------------------------------------------------------
    @property
    def specdec_dir(self) -> str:
        return self._p("specdec")

    def specdec_cell(self, cell: str = _w("sdcell"), kind: str = "table") -> str:
        suffix = {"table": ".parquet", "steps": ".steps.parquet", "meta": ".json"}[kind]
        return self._p("specdec", "cells", f"{cell}{suffix}")

    @property
    def specdec_table(self) -> str:
        return self._p("specdec", "specdec.parquet")

    @property
    def specdec_steps(self) -> str:
        return self._p("specdec", "specdec_steps.parquet")

    @property
    def specdec_disparity(self) -> str:
        return self._p("specdec", "disparity.json")

    def specdec_attribution(self, response: str, ext: str = "csv") -> str:
        return self._p("specdec", f"attribution_{response}.{ext}")

    @property
    def specdec_mitigation(self) -> str:
        """The mitigation's summary; its other outputs (drafter/, adapter/, tables) sit beside it."""
        return self._p("specdec", "mitigation", "mitigation.json")

    # --- logs and benchmarks -------------------------------------------------------------------
    def log(self, rule: str, name: str | None = None) -> str:
        return self._p("logs", rule, f"{name}.log") if name else self._p("logs", f"{rule}.log")

    def benchmark(self, rule: str, name: str | None = None) -> str:
        return self._p("benchmarks", rule, f"{name}.tsv") if name else self._p("benchmarks", f"{rule}.tsv")

    @property
    def benchmarks_root(self) -> str:
        return self._p("benchmarks")

    def rel(self, path: str | Path) -> str:
        """A path relative to the results folder (for tables of checksums and notes)."""
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)
