# Published claims: consistency checks (no model) and the mapping of claims onto the grid's cells.


rule claims_check:
    input:
        W.claim_files,
    output:
        L.findings,
    log:
        L.log("claims_check"),
    benchmark:
        L.benchmark("claims_check")
    params:
        pair=f"--pair {W.claim_pair}" if W.claim_pair else "",
    # exit 1 means "findings were written", which is a result, not a failure
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid claims check {input} {params.pair} > {output} 2> {log} || [ $? -eq 1 ]"


rule claims_map:
    input:
        files=W.claim_files,
        cells=L.cells,
        samples=L.samples,
        shares=L.shares,
        # a fractional design: unrun cells with estimable predictions join the grid, labelled as predicted
        predicted=[L.predicted_cells] if W.design is not None else [],
    output:
        cells=L.claim_cells,
        verdicts=L.verdicts,
        published=L.published,
    log:
        L.log("claims_map"),
    benchmark:
        L.benchmark("claims_map")
    params:
        pair=f"--pair {W.claim_pair}" if W.claim_pair else "",
        predicted=f"--predicted {L.predicted_cells}" if W.design is not None else "",
        seed=W.cfg.seed,
        aggregation=W.fixed_level("aggregation"),
        out=lambda wc, output: os.path.dirname(output.verdicts),
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid claims map {input.files} --cells {input.cells} --samples {input.samples} "
        "--shares {input.shares} {params.pair} {params.predicted} --seed {params.seed} --aggregation {params.aggregation} --out {params.out} > {log} 2>&1"
