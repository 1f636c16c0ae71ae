# Scoring: metric, scale, aggregation and split applied per cell to stored generations (no model).


rule grid:
    output:
        f"{R}/grid/cells.tsv",
    log:
        f"{R}/logs/grid.log",
    params:
        config=CONFIG_PATH,
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid grid --config {params.config} --out {output} > {log} 2>&1"


rule score:
    input:
        grid=f"{R}/grid/cells.tsv",
        manifests=expand(f"{R}/generations/{{pkey}}.manifest.json", pkey=PREPARED),
    output:
        samples=f"{R}/tables/samples.parquet",
        cells=f"{R}/tables/cells.parquet",
    log:
        f"{R}/logs/score.log",
    params:
        config=CONFIG_PATH,
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid score --config {params.config} --manifests {input.manifests} "
        "--samples {output.samples} --cells {output.cells} > {log} 2>&1"
