# reprogrid: a grid of RULER evaluation-protocol factors on real models, attributed and reported.
# Run: snakemake --cores 2            (default study: configs/config.yaml)
#      snakemake --cores 2 --configfile configs/studies/<study>.yaml
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: "configs/config.yaml"


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/ruler.smk"
include: "rules/generate.smk"
include: "rules/score.smk"
include: "rules/attribute.smk"
include: "rules/claims.smk"
include: "rules/pitfalls.smk"
include: "rules/specdec.smk"
include: "rules/report.smk"


rule all:
    input:
        W.final_outputs(),
    default_target: True
