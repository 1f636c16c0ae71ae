"""What a report contains: its figures and tables (name, title, caption file, category), and which of
them a given study writes."""

from __future__ import annotations

DEFAULT_BOOTSTRAP = 1000

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
