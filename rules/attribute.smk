# Attribution: variance shares of the per-sample score over the factors that vary, bootstrap over items.


rule gstudy:
    input:
        samples=L.samples,
    output:
        table=L.variance_components,
        details=L.variance_components_json,
    log:
        L.log("gstudy"),
    benchmark:
        L.benchmark("gstudy")
    params:
        factors=",".join(W.varying),
        out=lambda wc, output: os.path.dirname(output.table),
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid gstudy {input.samples} --response score --item item_id --factors {params.factors} "
        "--or-explain --out {params.out} > {log} 2>&1"


rule attribute:
    input:
        samples=L.samples,
    output:
        shares=L.shares,
        details=L.shares_json,
    log:
        L.log("attribute"),
    benchmark:
        L.benchmark("attribute")
    params:
        factors=",".join(W.varying),
        bootstrap=W.bootstrap,
        seed=W.cfg.seed,
        out=lambda wc, output: os.path.dirname(output.shares),
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid attribute {input.samples} --response score --factors {params.factors} --item item_id "
        "--bootstrap {params.bootstrap} --seed {params.seed} --allow-degenerate --out {params.out} > {log} 2>&1"


# A fractional design: the model-based decomposition (main effects and the estimable two-way interactions),
# predicted means of the unrun cells with intervals, and the held-out check (reprogrid.attribution.incomplete).
if W.design is not None:

    rule estimate:
        input:
            samples=L.samples,
        output:
            shares=L.design_shares,
            details=L.design_shares_json,
            predicted=L.predicted_cells,
            holdout=L.holdout,
        log:
            L.log("estimate"),
        benchmark:
            L.benchmark("estimate")
        params:
            factors=",".join(W.varying),
            seed=W.cfg.seed,
            out=lambda wc, output: os.path.dirname(output.shares),
        conda:
            ENV_ANALYSIS
        shell:
            "python -m reprogrid estimate {input.samples} --response score --factors {params.factors} "
            "--seed {params.seed} --out {params.out} > {log} 2>&1"
