# The attribution report: Markdown summary + self-contained HTML.


rule report:
    input:
        cells=f"{R}/tables/cells.parquet",
        samples=f"{R}/tables/samples.parquet",
        shares=f"{R}/attribution/variance_shares.csv",
        manifests=expand(f"{R}/generations/{{pkey}}.manifest.json", pkey=PREPARED),
    output:
        md=f"{R}/report/summary.md",
        html=f"{R}/report/index.html",
    log:
        f"{R}/logs/report.log",
    params:
        config=CONFIG_PATH,
        results=R,
    shell:
        "reprogrid report --config {params.config} --results {params.results} > {log} 2>&1"
