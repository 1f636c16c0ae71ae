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

Modules, in the order data flows through them:

* ``outputs``: the figures and tables a report contains (names, titles, captions);
* ``inputs``: what is read from the results folder (paths from :class:`reprogrid.layout.Layout`);
* ``fmt``: numbers and intervals as printed (:class:`Est`);
* ``scores``: cells, varying factors and score estimates (:class:`reprogrid.stats.ItemBootstrap`);
* ``sections`` (study, attribution, headline), ``claims_section``, ``specdec_section`` (with
  ``mitigation_section``, the mitigation's before/after), ``caveats``,
  ``provenance_section``: one dict per section of the templates; ``assemble`` computes them all once;
* ``figures``, ``tables``, ``render``: the PNGs, the CSVs, and ``summary.md`` / ``index.html``.
"""

from __future__ import annotations

from reprogrid.report.fmt import Est, decimals_for
from reprogrid.report.inputs import Inputs, load_inputs
from reprogrid.report.outputs import DEFAULT_BOOTSTRAP, FIGURES, TABLES, expected_outputs
from reprogrid.report.render import build_report

__all__ = ["DEFAULT_BOOTSTRAP", "FIGURES", "TABLES", "Est", "Inputs", "build_report", "decimals_for",
           "expected_outputs", "load_inputs"]
