# Generation: one job per prepared model; every generation_id of that model runs in it (weights loaded
# once per load setting). Finished generations are kept across interruptions (see reprogrid.generate).


rule generate:
    input:
        unpack(generate_inputs),
    output:
        manifest=f"{R}/generations/{{pkey}}.manifest.json",
    log:
        f"{R}/logs/generate/{{pkey}}.log",
    benchmark:
        f"{R}/benchmarks/generate/{{pkey}}.tsv"
    params:
        config=CONFIG_PATH,
        out=lambda wc: f"{R}/generations/{wc.pkey}",
        docs=f"{R}/ruler",
    threads: THREADS
    resources:
        mem_mb=8000,
        gpu=lambda wc: int(prepared_model_entry(wc.pkey).get("device") == "cuda"),
    conda:
        ENV_MODEL
    shell:
        "python -m reprogrid generate --config {params.config} --prepared-key {wildcards.pkey} --model-dir {input.model} "
        "--docs {params.docs} --out {params.out} --manifest {output.manifest} --threads {threads} > {log} 2>&1"
