"""Published claims: a registry, consistency checks, mapping to grid cells and verdicts for the report.

Claims files (``configs/claims/*.yaml``, schema ``schema/claims.schema.yaml``) are mappings with a
``claims:`` list (and optional ``notes:``, ``description:``). A claim::

    - id: pbs_attn_qwen25_7b_1m_ruler        # unique over all files read together ([A-Za-z0-9._-])
      source: {paper: "...", arxiv: "2510.21270", table: "Table 1"}   # or one string
      model: Qwen/Qwen2.5-7B-Instruct-1M        # the name the paper uses, or the `model` factor's slug
      benchmark: ruler
      value: 95.7
      scale: percent                            # percent (0-100) or fraction (0-1)
      decimals: 1                               # optional: reported precision (else read off each number)
      n_items: 500                              # optional: binary items behind `value` (enables GRIM)
      item_denominator: 1                       # optional: item scores are multiples of 1/this (default 1)
      aggregate: mean                           # optional, with `components` (and `aggregate_over`)
      aggregate_over: context_length            # which factor the component keys are levels of
      components: {4096: 97.5, 8192: 97.1}      # level -> value, same scale as `value`
      weights: {4096: 1, 8192: 1}               # optional: weight of each component (default equal)
      verification: {status: seen, where: "README table, row ..."}   # seen | secondary | not_found
      protocol: {dtype: bfloat16}               # the level of each factor THE SOURCE STATES; unstated = absent
      notes: "..."
      stated: ["quotes or facts seen in the source"]

Modules: ``registry`` (reading and validating files; ``model_slug``, the one name normalisation),
``checks`` (``claims check``: findings that need no model), ``mapping`` (claims on a grid's cells; the
published record as rows), ``verdicts`` (the report's answers for a pair).

``reprogrid claims check FILE... [--pair LOW,HIGH]``: one line per finding (``FILE: CLAIM_ID: KIND:
message``); exit 1 if any finding, 0 if none, 2 if a file is invalid (kinds: ``reprogrid.claims.checks``).

``reprogrid claims map FILE... --cells CELLS --out DIR [--samples S] [--shares T] [--pair LOW,HIGH]``
writes ``DIR/claim_cells.csv`` (``map_claims_to_cells``), ``DIR/verdicts.json`` (``verdicts``) and
``DIR/published.csv`` (``published_record``). Values are kept on the fraction scale internally and in
outputs.
"""

from reprogrid.claims.checks import Finding, check_claims, grim_possible, standard_aggregations
from reprogrid.claims.mapping import Profiles, claim_profiles, grid_factors, map_claims_to_cells, published_record
from reprogrid.claims.registry import Claim, decimals_of, load_claims, model_slug
from reprogrid.claims.verdicts import verdicts

__all__ = ["Claim", "Finding", "Profiles", "check_claims", "claim_profiles", "decimals_of", "grid_factors",
           "grim_possible", "load_claims", "map_claims_to_cells", "model_slug", "published_record", "standard_aggregations",
           "verdicts"]
