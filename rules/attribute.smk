# Attribution: variance shares of the per-sample score over the factors that vary, bootstrap over items.

VARYING = [f for f in CFG.listed if CELLS[f].nunique() > 1] or list(CFG.listed)  # --allow-degenerate copes


rule attribute:
    input:
        samples=f"{R}/tables/samples.parquet",
    output:
        shares=f"{R}/attribution/variance_shares.csv",
        details=f"{R}/attribution/variance_shares.json",
    log:
        f"{R}/logs/attribute.log",
    benchmark:
        f"{R}/benchmarks/attribute.tsv"
    params:
        factors=",".join(VARYING),
        bootstrap=CFG.raw.get("attribution", {}).get("bootstrap", 200),
        seed=CFG.seed,
        out=lambda wc, output: os.path.dirname(output[0]),
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid attribute {input.samples} --response score --factors {params.factors} --item item_id "
        "--bootstrap {params.bootstrap} --seed {params.seed} --allow-degenerate --out {params.out} > {log} 2>&1"
