"""Every section of the report computed once from the loaded inputs (what the templates, figures and
tables are made from)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from reprogrid.report.caveats import caveats_section
from reprogrid.report.claims_section import claims_section
from reprogrid.report.design_section import design_section
from reprogrid.report.inputs import Inputs
from reprogrid.report.noise_section import noise_section
from reprogrid.report.pitfalls_section import pitfalls_section
from reprogrid.report.research_section import research_section
from reprogrid.report.provenance_section import provenance_section
from reprogrid.report.scores import Scores, by_context, main_effects
from reprogrid.report.sections import attribution_section, headline, study_section
from reprogrid.report.specdec_section import specdec_section


@dataclass
class Sections:
    inp: Inputs
    scores: Scores
    study: dict
    attr: dict
    head: dict
    main_effects: pd.DataFrame
    context: pd.DataFrame | None
    claims: dict | None
    specdec: dict | None
    pitfalls: dict | None
    research: dict | None
    noise: dict | None
    caveats: dict
    prov: dict
    design: dict | None = None

    @property
    def context_varies(self) -> bool:
        return "context_length" in self.scores.varying


def assemble(inp: Inputs, n_boot: int) -> Sections:
    sc = Scores(inp, n_boot)
    attr = attribution_section(inp)
    noise = noise_section(inp)
    head = headline(attr, (noise or {}).get("advice"))
    pitfalls = pitfalls_section(inp)
    return Sections(inp=inp, scores=sc, study=study_section(inp, sc), attr=attr, head=head,
                    main_effects=main_effects(sc), context=by_context(sc), claims=claims_section(inp),
                    specdec=specdec_section(inp), pitfalls=pitfalls, research=research_section(inp, sc, head, pitfalls),
                    noise=noise, caveats=caveats_section(inp, sc, attr),
                    prov=provenance_section(inp, attr, n_boot), design=design_section(inp))
