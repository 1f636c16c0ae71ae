"""What the Snakefile needs from the package, in one object: the loaded study, its layout, the jobs it
implies, and the parameters that make a config edit reach exactly the affected jobs.

Rules declare, as ``params``, hashes of the parts of the parsed config they depend on (never the file's
bytes): an edit re-runs the jobs whose part changed, and a comment or formatting change re-runs
nothing. The grid rule's parameter is the hash of the cell table; a generate job's is the list of its
generation ids (finished generations on disk are kept and skipped inside the job); the report's is
the hash of the whole parsed config.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from reprogrid import grid
from reprogrid.catalogue import level_text, split_prepared_key
from reprogrid.io import short_hash
from reprogrid.layout import Layout
from reprogrid.study import gpu_needs, load_study


def job_environment(conda: bool, src) -> None:
    """Environment of the workflow's jobs, which run `python -m reprogrid` (rules/common.smk).

    Venv (default): this interpreter's bin directory first on PATH, so `python` is the one that runs
    snakemake. Conda (`--sdm conda`): the rule's environment provides python and the pinned dependencies;
    the code comes from the checkout's src/ on PYTHONPATH, so there is one copy of it."""
    if conda:
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p)
    else:
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


class StudyWorkflow:
    def __init__(self, config_path: str | os.PathLike):
        from reprogrid.models import EMBEDDED

        self.config_path = str(config_path)
        self.cfg = cfg = load_study(config_path)
        self.layout = Layout(cfg.results)
        self.cells = grid.expand(cfg)
        self.gens = grid.generations(cfg)
        self.embedded = EMBEDDED
        self.prepared = sorted({g["prepared_key"] for g in self.gens.values()})
        self.tokenizers = sorted({g["sizing_tokenizer"] for g in self.gens.values()})
        self.docs = sorted({(t, g["context_length"], g["sizing_tokenizer"], g["data_seed"])
                            for g in self.gens.values() for t in cfg.ruler["tasks"]})
        self.design = grid.design_plan(cfg)  # None: a full grid
        self.varying = [f for f in cfg.listed if self.cells[f].nunique() > 1] or list(cfg.listed)
        if cfg.raw.get("specdec"):
            from reprogrid.specdec.cells import study_cells

            self.specdec_cells = study_cells(cfg)
        else:
            self.specdec_cells = {}

    # --- parameters that carry config edits to the jobs ------------------------------------------
    @property
    def grid_hash(self) -> str:
        return short_hash(grid.to_tsv(self.cells), 16)

    def generation_ids(self, pkey: str) -> str:
        return ",".join(sorted(g for g, v in self.gens.items() if v["prepared_key"] == pkey))

    @property
    def content_hash(self) -> str:
        return self.cfg.content_hash

    def entry_hash(self, pkey: str) -> str:
        return short_hash(self.model_entry(pkey), 16)

    def fixed_level(self, factor: str) -> str:
        """The first level of a factor (its only one when it is held fixed)."""
        return level_text(self.cfg.factors[factor][0])

    def section_hash(self, *keys: str) -> str:
        return short_hash({k: self.cfg.raw.get(k) for k in keys}, 16)

    @property
    def design_outputs(self) -> dict:
        """Extra outputs of the grid rule: the alias structure of a fractional design."""
        return {"aliases": self.layout.aliases} if self.design is not None else {}

    @property
    def specdec_cells_hash(self) -> str:
        """``section_hash("specdec")`` without the mitigation settings (they do not change a measurement cell);
        equal to it for a section without ``mitigation``."""
        section = self.cfg.raw.get("specdec")
        if isinstance(section, dict):
            section = {k: v for k, v in section.items() if k != "mitigation"}
        return short_hash({"specdec": section}, 16)

    # --- settings ----------------------------------------------------------------------------------
    @property
    def threads(self) -> int:
        return self.cfg.threads

    @property
    def bootstrap(self) -> int:
        return int(self.cfg.attribution["bootstrap"])

    @property
    def claim_files(self) -> list[str]:
        return list(self.cfg.claims.get("files", []))

    @property
    def claim_pair(self) -> str:
        c = self.cfg.claims
        return f"{c['low']},{c['high']}" if "low" in c and "high" in c else ""

    def model_entry(self, pkey: str) -> dict:
        return self.cfg.models[split_prepared_key(pkey)[0]]

    def needs_gpu(self, pkey: str) -> int:
        return int(self.model_entry(pkey).get("device") == "cuda")

    def gpu_needs(self) -> list[str]:
        return gpu_needs(self.cfg)

    def engine_problem(self) -> str | None:
        """Why an engine of this study cannot run on this machine (package missing, port in use), or None."""
        from reprogrid.engines import check_ready
        from reprogrid.errors import UserError

        try:
            check_ready(self.gens.values(), self.cfg.models, self.config_path)
        except UserError as exc:
            return str(exc)
        return None

    def embedded_gguf(self, slug: str) -> list[str]:
        """The joined GGUF a model or tokenizer slug needs, if it comes from the embedded mirror."""
        cfg = self.cfg
        entry = cfg.models.get(slug) or (cfg.models.get(cfg.tokenizers.get(slug, {}).get("model", "")) or {})
        if entry.get("source") == "embedded":
            return [self.layout.embedded_gguf(self.embedded[entry["embedded"]].upstream_file)]
        return []

    # --- inputs and targets ------------------------------------------------------------------------
    def generate_inputs(self, pkey: str) -> dict:
        gens = [g for g in self.gens.values() if g["prepared_key"] == pkey]
        docs = sorted({self.layout.docs(t, g["context_length"], g["sizing_tokenizer"], g["data_seed"])
                       for g in gens for t in self.cfg.ruler["tasks"]})
        return {"model": self.layout.prepared_model(pkey), "docs": docs}

    @property
    def manifests(self) -> list[str]:
        return [self.layout.generation_manifest(p) for p in self.prepared]

    @property
    def has_claims(self) -> bool:
        return bool(self.claim_files)

    @property
    def has_pitfalls(self) -> bool:
        return bool(self.cfg.raw.get("pitfalls"))

    @property
    def has_specdec(self) -> bool:
        return bool(self.cfg.raw.get("specdec"))

    def final_outputs(self) -> list[str]:
        L = self.layout
        out = [L.grid, L.samples, L.cells, L.shares, L.variance_components, L.report_md, L.report_html]
        if self.design is not None:
            out += [L.design_shares, L.predicted_cells, L.holdout]
        if self.has_claims:
            out += [L.findings, L.verdicts]
        if self.has_pitfalls:
            out += [L.pitfalls_table]
        if self.has_specdec:
            out += [L.specdec_table, L.specdec_disparity, L.specdec_attribution("speedup"),
                    L.specdec_attribution("acceptance")]
        if self.has_mitigation:
            out.append(L.specdec_mitigation)
        return out

    def report_inputs(self) -> dict:
        L = self.layout
        out = {"cells": L.cells, "samples": L.samples, "shares": L.shares, "details": L.shares_json,
               "components": L.variance_components_json,
               "grid": L.grid, "manifests": self.manifests,
               "models": [L.prepared_model(p) for p in self.prepared]}
        if self.has_claims:
            out.update(verdicts=L.verdicts, findings=L.findings, claim_cells=L.claim_cells, published=L.published)
        if self.has_pitfalls:
            out.update(pitfalls=L.pitfalls_json)
        if self.design is not None:
            out.update(design=L.design_shares_json)
        if self.has_specdec:
            out.update(specdec=L.specdec_table, disparity=L.specdec_disparity)
        if self.has_mitigation:
            out.update(mitigation=L.specdec_mitigation)
        return out

    def report_benchmarks(self) -> list[str]:
        """The Snakemake benchmark files of the jobs the report's run-time table shows."""
        L = self.layout
        out = [L.benchmark(rule, p) for rule in ("prepare_model", "generate") for p in self.prepared]
        out += [L.benchmark(rule) for rule in ("grid", "score", "attribute", "gstudy")]
        if self.has_claims:
            out += [L.benchmark("claims_check"), L.benchmark("claims_map")]
        if self.has_pitfalls:
            out += [L.benchmark("pitfalls")]
        if self.has_mitigation:
            out += [L.benchmark("specdec_mitigate")]
        return out

    # --- speculative decoding ------------------------------------------------------------------
    def specdec_models(self, cell: str) -> dict:
        c = self.specdec_cells[cell]
        return {"verifier": self.layout.prepared_model(c["verifier_key"]),
                "drafter": self.layout.prepared_model(c["drafter_key"])}

    @property
    def has_mitigation(self) -> bool:
        return bool((self.cfg.raw.get("specdec") or {}).get("mitigation"))

    def mitigation_models(self) -> dict:
        """Prepared directories of the mitigated pair's verifier and drafter."""
        from reprogrid.specdec.cells import mitigation_pair

        p = mitigation_pair(self.cfg)
        return {"verifier": self.layout.prepared_model(p["verifier_key"]),
                "drafter": self.layout.prepared_model(p["drafter_key"])}

    def mitigation_gpu(self) -> int:
        from reprogrid.specdec.cells import mitigation_pair

        p = mitigation_pair(self.cfg)
        return int(any(self.cfg.models[p[role]].get("device") == "cuda" for role in ("verifier", "drafter")))

    def specdec_gpu(self, cell: str) -> int:
        c = self.specdec_cells[cell]
        return int(any(self.cfg.models[c[role]].get("device") == "cuda" for role in ("verifier", "drafter")))


def cuda_available() -> bool:
    import shutil

    try:
        import torch
    except ImportError:
        return shutil.which("nvidia-smi") is not None
    return torch.cuda.is_available()


def src_dir() -> Path:
    return Path(__file__).resolve().parents[1]
