# Speculative decoding study (configs with a `specdec:` section; see reprogrid.specdec and the schema's docs).
# One job per measurement cell (pair x gamma x decoding x mix x chat template): it loads the pair's prepared
# models (rule prepare_model) and measures every configured prompt with the verifier alone and with the drafter.
# Wall-clock speed-ups are only comparable when nothing else runs beside a cell: give the study
# `resources.threads` equal to the cores you pass to snakemake (then cells run one at a time, alone).
wildcard_constraints:
    sdcell="|".join(re.escape(c) for c in SPECDEC_CELLS),


rule specdec_run:
    input:
        unpack(specdec_models),
    output:
        table=f"{SD}/cells/{{sdcell}}.parquet",
        steps=f"{SD}/cells/{{sdcell}}.steps.parquet",
        meta=f"{SD}/cells/{{sdcell}}.json",
    log:
        f"{R}/logs/specdec_run/{{sdcell}}.log",
    benchmark:
        f"{R}/benchmarks/specdec_run/{{sdcell}}.tsv"
    params:
        config=CONFIG_PATH,
        out=lambda wc, output: os.path.dirname(output.table),
    threads: THREADS
    resources:
        mem_mb=16000,
        gpu=specdec_gpu,
    conda:
        ENV_MODEL
    shell:
        "python -m reprogrid specdec run --config {params.config} --cell {wildcards.sdcell} --verifier-dir {input.verifier} "
        "--drafter-dir {input.drafter} --threads {threads} --out {params.out} > {log} 2>&1"


rule specdec_summarize:
    input:
        tables=expand(f"{SD}/cells/{{sdcell}}.parquet", sdcell=SPECDEC_CELLS),
        steps=expand(f"{SD}/cells/{{sdcell}}.steps.parquet", sdcell=SPECDEC_CELLS),
        metas=expand(f"{SD}/cells/{{sdcell}}.json", sdcell=SPECDEC_CELLS),
    output:
        table=f"{SD}/specdec.parquet",
        steps=f"{SD}/specdec_steps.parquet",
        disparity=f"{SD}/disparity.json",
    log:
        f"{R}/logs/specdec_summarize.log",
    benchmark:
        f"{R}/benchmarks/specdec_summarize.tsv"
    params:
        config=CONFIG_PATH,
        out=lambda wc, output: os.path.dirname(output.table),
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid specdec collect --config {params.config} --out {params.out} {input.tables} > {log} 2>&1"


rule specdec_attribute:
    input:
        table=f"{SD}/specdec.parquet",
    output:
        speedup=f"{SD}/attribution_speedup.csv",
        speedup_json=f"{SD}/attribution_speedup.json",
        acceptance=f"{SD}/attribution_acceptance.csv",
        acceptance_json=f"{SD}/attribution_acceptance.json",
    log:
        f"{R}/logs/specdec_attribute.log",
    benchmark:
        f"{R}/benchmarks/specdec_attribute.tsv"
    params:
        bootstrap=CFG.raw.get("attribution", {}).get("bootstrap", 200),
        seed=CFG.seed,
        out=lambda wc, output: os.path.dirname(output.speedup),
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid specdec attribute {input.table} --bootstrap {params.bootstrap} --seed {params.seed} "
        "--out {params.out} > {log} 2>&1"
