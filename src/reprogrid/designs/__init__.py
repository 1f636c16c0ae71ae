"""Planned fractions of a grid's generation runs (the study config's ``design:``).

A design picks which combinations of the varying generation factors are run; scoring factors stay fully
crossed (they cost no run). Array construction is pyDOE3's: ``fracfact`` for a regular two-level 2^(k-p)
fraction of a given resolution (the generators are the fewest-runs set whose defining relation has no
word shorter than the resolution, fewest shortest words first), ``gsd`` for mixed levels (a generalized
subset design with about 1/reduction of the runs). The seed picks which of the equivalent fractions is run
(the signs of the columns; which complementary subset). A config without ``design:`` or with
``design: {type: full}`` expands exactly as before.

Modules: ``plan`` (settings, checks, the selected runs), ``aliases`` (the alias structure: which main
effects and two-way interactions the runs can estimate, which are confounded with which).
"""

from reprogrid.designs.aliases import alias_structure, alias_summary, greedy_model, term_matrix, terms_of
from reprogrid.designs.plan import Plan, design_settings, plan

__all__ = ["Plan", "plan", "design_settings", "alias_structure", "alias_summary", "greedy_model", "term_matrix",
           "terms_of"]
