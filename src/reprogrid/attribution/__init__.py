"""Variance attribution: how much of the spread of a response each factor (and interaction) explains.

:func:`attribute` returns an :class:`AttributionResult` (``reprogrid attribute`` writes its table as
``variance_shares.csv`` and its details as ``variance_shares.json``):
one row per effect (each factor, each two-way interaction ``A:B``, and ``residual``) with

- ``eta2``: type-II ANOVA sum of squares over the total sum of squares. The ANOVA has all main effects
  and all two-way interactions; higher-order interactions are pooled into the residual. With
  ``family="binomial"`` the sums of squares are likelihood-ratio (deviance) drops and the total is the
  null deviance.
- ``omega2``: (SS_j - df_j * MS_E) / (SS_T + MS_E), the small-sample-corrected eta2 (binomial: MS_E is the
  Pearson dispersion of the ANOVA model). Not defined for the residual row (empty).
- ``shapley`` (factor rows): the Shapley value of factor j for v(S) = R^2 of the response on the full
  interaction of the factors in S (binomial: deviance R^2, which is McFadden's R^2 for 0/1 outcomes).
  It sums over the factors to v(all factors); the residual row holds 1 - v(all factors), so the column
  sums to 1. On a balanced grid it equals Owen's Shapley effect.
- ``sobol_total`` (factor rows): v(all) - v(all but j), the share in any effect involving j
  (residual row: 1 - v(all)).
- ``ci_low``, ``ci_high``: a percentile bootstrap interval for ``shapley`` (the resampling spread of the
  estimate; it sits above the population share by the noise: use ``adj_ci_*`` for the population). Items (the ``item``
  column(s); every row is its own item without them) are resampled jointly across all cells, within strata
  of items that are exchangeable (same set of levels of every factor whose levels do not share items).
- ``noise_floor`` (factor rows): the 95th percentile of the Shapley share the factor gets when its
  labels are permuted (within items where items are crossed with it, between items otherwise, always
  within the cells of the other factors): what a factor with no effect gets at this sample size. It is
  the k-th smallest of the B permuted shares, k = ceil(0.95 (B + 1)), so that a factor with no effect
  clears it (``above_noise``) at most 5% of the time. Items nested in the factor (seen at one of its
  levels) are relabelled as whole items, so that an item's effect moves with all its cells.
- ``shapley_adj`` (factor and residual rows): the Shapley share with the sampling noise of the cell means
  removed (an R^2 counts that noise as effect, more so with few items per cell): ``shapley`` minus the
  bootstrap estimate of the noise, U/(U-H) (mean of the replicates - shapley), U items in H strata. It
  estimates the *population* share: the same cells measured on infinitely many items from the same
  generator. ``adj_ci_low``, ``adj_ci_high``: an interval for that population share. Gaussian family: the
  test-inversion bootstrap interval of :mod:`reprogrid.attribution.inversion` (the population shares of
  the worlds, same items but the factor's part of the cell means scaled, in which the observed share is
  not rejected; expanded levels for few items); binomial family: ``shapley_adj`` -/+ z times the bootstrap
  standard error. Coverage measured in benchmarks/RESULTS-attribution.md (``bench_coverage.py``).
  ``sobol_total_adj``: the same correction of ``sobol_total``. All four need ``bootstrap`` > 0.

Everything is computed from cell-level sufficient statistics (per cell, and per (cell, item) for the
bootstrap and the permutations): no replicate refits anything from the raw rows.

Modules: ``prepare`` (validation, sufficient statistics), ``subsets`` (v(S), Shapley, Sobol totals),
``anova`` (type-II ANOVA), ``resample`` (item bootstrap), ``inversion`` (intervals of the population
shares), ``noise`` (permutation noise floor),
``core`` (the engine and its result).
"""

from reprogrid.attribution.core import AttributionResult, attribute
from reprogrid.attribution.noise import DEFAULT_NOISE_PERMUTATIONS, NOISE_QUANTILE
from reprogrid.attribution.prepare import (COLUMNS, CSV_NAME, FAMILIES, JSON_NAME, MAX_FACTORS, RESIDUAL, check_int,
                                           varying_factors)

__all__ = [
    "AttributionResult",
    "attribute",
    "varying_factors",
    "check_int",
    "COLUMNS",
    "CSV_NAME",
    "JSON_NAME",
    "FAMILIES",
    "RESIDUAL",
    "MAX_FACTORS",
    "NOISE_QUANTILE",
    "DEFAULT_NOISE_PERMUTATIONS",
]
