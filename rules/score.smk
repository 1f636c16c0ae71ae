# The grid (and, for a fractional design, its alias structure), and scoring: metric, scale, aggregation and split applied per cell to stored generations
# (no model). The grid rule's `cells` parameter is the hash of the cell table: any edit that changes the
# grid re-runs it, and through its output everything downstream; nothing else does.


rule grid:
    output:
        grid=L.grid,
        **W.design_outputs,
    log:
        L.log("grid"),
    benchmark:
        L.benchmark("grid")
    params:
        config=CONFIG_PATH,
        cells=W.grid_hash,
        aliases=lambda wc, output: f"--aliases {output.aliases}" if "aliases" in output.keys() else "",
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid grid --config {params.config} --out {output.grid} {params.aliases} > {log} 2>&1"


rule score:
    input:
        grid=L.grid,
        manifests=W.manifests,
    output:
        samples=L.samples,
        cells=L.cells,
        provenance=L.tables_provenance,
    log:
        L.log("score"),
    benchmark:
        L.benchmark("score")
    params:
        config=CONFIG_PATH,
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid score --config {params.config} --manifests {input.manifests} "
        "--samples {output.samples} --cells {output.cells} --provenance {output.provenance} > {log} 2>&1"
