# The attribution report: Markdown summary + self-contained HTML, and every figure and table on its own,
# registered for `snakemake --report report.zip` (caption files: src/reprogrid/templates/*.rst).
# Claims and speculative decoding outputs are inputs only when the config asks for those studies.
from reprogrid.report import FIGURES as REPORT_FIGURES, TABLES as REPORT_TABLES, expected_outputs

REPORT_FIGS, REPORT_TABS = expected_outputs(CFG)
CAPTIONS = "../src/reprogrid/templates"


rule report:
    input:
        unpack(report_optional_inputs),
        cells=f"{R}/tables/cells.parquet",
        samples=f"{R}/tables/samples.parquet",
        shares=f"{R}/attribution/variance_shares.csv",
        details=f"{R}/attribution/variance_shares.json",
        grid=f"{R}/grid/cells.tsv",
        manifests=expand(f"{R}/generations/{{pkey}}.manifest.json", pkey=PREPARED),
    output:
        md=report_item(f"{R}/report/summary.md", "report.rst", "0. Report", "summary (Markdown)", "text"),
        html=report_item(f"{R}/report/index.html", "report.rst", "0. Report", "report (HTML)", "page"),
        **{f"figure_{n}": report_item(f"{R}/report/figures/{n}.png", REPORT_FIGURES[n][1], REPORT_FIGURES[n][2],
                                      REPORT_FIGURES[n][0], "figure") for n in REPORT_FIGS},
        **{f"table_{n}": report_item(f"{R}/report/tables/{n}.csv", REPORT_TABLES[n][1], REPORT_TABLES[n][2],
                                     REPORT_TABLES[n][0], "table") for n in REPORT_TABS},
    log:
        f"{R}/logs/report.log",
    benchmark:
        f"{R}/benchmarks/report.tsv"
    params:
        config=CONFIG_PATH,
        results=lambda wc, output: str(Path(output.md).parent.parent),
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid report --config {params.config} --results {params.results} > {log} 2>&1"
