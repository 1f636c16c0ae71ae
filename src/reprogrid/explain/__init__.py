"""Decompose the gap between two protocols into exact Shapley contributions of the factors that differ.

``reprogrid explain INPUT --response COL --low "f=a,g=b" --high "f=c,g=d" [--item COL] --out DIR``

Definitions (``explain()`` is the API, the CLI is a thin shell around it):

- D = the factors whose ``--low`` and ``--high`` levels differ, in the order they are named.
- For S a subset of D, v(S) = the mean response of the cell in which the factors of S take their
  ``--high`` level and the other factors of D their ``--low`` level. v(empty) = low, v(D) = high.
- The contribution of factor i is its Shapley value
  ``phi_i = sum over S in D minus i of |S|! (|D|-|S|-1)! / |D|! * (v(S + i) - v(S))``,
  computed exactly by enumerating the 2^|D| cells of the path (|D| <= 16). The contributions sum to
  high - low (exactly in real arithmetic; to float rounding, ~1e-15, in practice). An interaction of
  two factors is split half and half.
- A factor named on one side only, or on both sides with the same level, is *held* at that level.
- Other factor columns of INPUT (by default the study's factor catalogue present in INPUT; ``--factors``
  overrides) that still have several levels among the selected rows are *averaged over*: each vertex
  of the path is the equal-weight mean over the grid cells of that vertex (one per combination of the
  averaged factors' levels). Every vertex must have every combination that any vertex has; a
  combination that is absent from a vertex is a missing cell.
- Rows with ``status`` other than "ok" (when INPUT has a ``status`` column) and rows whose response
  is NaN are left out (counted in ``left_out``); a cell left without rows is missing. An infinite
  response, or a used row without a factor level (or an item id), is refused: one error naming the column.
- With ``--item COL`` the input is per item (the ``samples`` table): a cell's value is the mean of the
  response over its items, and intervals come from a bootstrap over items. An item is identified by
  (``task``, COL) when INPUT has a ``task`` column, else by COL. Items are resampled *jointly*: one
  draw of item ids applies to every cell that has those items; items are stratified by the set of
  cells they appear in (e.g. items that differ across context lengths are resampled within their
  own group), so each cell keeps its item count. Percentile intervals, seeded (``--seed``).
  Without ``--item`` the input is per cell and ``ci_low``/``ci_high`` are empty.

Missing cells: ``explain()`` never raises for them; it returns a result with ``missing_cells`` (one
dict of factor -> level per missing grid cell) and no contributions. The CLI then prints one
``missing cell: f=a, g=b`` line per cell on stderr, writes ``DIR/missing_cells.yaml`` (a
``missing_cells:`` list of factor -> level mappings, ready to be added to a study config) and exits 1.
Invalid input (unknown column, bad level syntax, non-numeric response) exits 2 with one ``error:`` line.

Outputs on success: ``DIR/contributions.csv`` (``factor, contribution, ci_low, ci_high, low_level,
high_level``, and with ``--item`` the paired test of each contribution: ``n_pairs, se, p_value, test, mde``)
and ``DIR/summary.json`` (low/high values with intervals, gap and its paired test ``gap_test``, held and
averaged factors). The tests (module ``paired``): exact McNemar for a 0/1 comparison of two cells, a paired
sign-flip permutation test otherwise, standard errors clustered by task, minimum detectable effect at 80%
power.

Modules: ``path`` (input checks, the factors of the path and its cells), ``core`` (the decomposition,
its intervals and its result), ``paired`` (paired, task-clustered tests of contributions and gap).
"""

from reprogrid.explain.core import MAX_DIFFERING, ExplainResult, explain, parse_levels, shapley_matrix

__all__ = ["MAX_DIFFERING", "ExplainResult", "explain", "parse_levels", "shapley_matrix"]
