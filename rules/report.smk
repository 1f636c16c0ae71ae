# The attribution report: Markdown summary + self-contained HTML, and every figure and table on its own,
# registered for `snakemake --report report.zip` (caption files: src/reprogrid/templates/*.rst).
# Claims and speculative decoding outputs are inputs only when the config asks for those studies.
from reprogrid.report import FIGURES as REPORT_FIGURES, TABLES as REPORT_TABLES, expected_outputs

REPORT_FIGS, REPORT_TABS = expected_outputs(W.cfg)


rule report:
    input:
        **W.report_inputs(),
        benchmarks=W.report_benchmarks(),
    output:
        md=report_item(L.report_md, "report.rst", "0. Report", "summary (Markdown)", "text"),
        html=report_item(L.report_html, "report.rst", "0. Report", "report (HTML)", "page"),
        **{f"figure_{n}": report_item(L.report_figure(n), REPORT_FIGURES[n][1], REPORT_FIGURES[n][2],
                                      REPORT_FIGURES[n][0], "figure") for n in REPORT_FIGS},
        **{f"table_{n}": report_item(L.report_table(n), REPORT_TABLES[n][1], REPORT_TABLES[n][2],
                                     REPORT_TABLES[n][0], "table") for n in REPORT_TABS},
    log:
        L.log("report"),
    benchmark:
        L.benchmark("report")
    params:
        config=CONFIG_PATH,
        results=lambda wc, output: os.path.dirname(os.path.dirname(output.md)),
        study=W.content_hash,
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid report --config {params.config} --results {params.results} > {log} 2>&1"
