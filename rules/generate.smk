# Generation: one job per prepared model; every generation_id of that model runs in it (weights loaded
# once per load setting). Finished generations are kept across interruptions and config edits (see
# reprogrid.generate); the job's `generations` parameter makes it re-run when its set of ids changes.


rule generate:
    input:
        unpack(lambda wc: W.generate_inputs(wc.pkey)),
    output:
        manifest=L.generation_manifest(),
    log:
        L.log("generate", "{pkey}"),
    benchmark:
        L.benchmark("generate", "{pkey}")
    params:
        config=CONFIG_PATH,
        out=lambda wc: L.generation_dir(wc.pkey),
        docs=L.docs_root,
        generations=lambda wc: W.generation_ids(wc.pkey),
    threads: THREADS
    resources:
        mem_mb=8000,
        gpu=lambda wc: W.needs_gpu(wc.pkey),
    conda:
        ENV_MODEL
    shell:
        "python -m reprogrid generate --config {params.config} --prepared-key {wildcards.pkey} --model-dir {input.model} "
        "--docs {params.docs} --out {params.out} --manifest {output.manifest} --threads {threads} > {log} 2>&1"
