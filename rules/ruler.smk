# RULER docs: built once per (task, length, sizing tokenizer, seed) with lm-eval's generators.


rule ruler_data:
    input:
        tokenizer=f"{R}/tokenizers/{{tok}}",
    output:
        f"{R}/ruler/{{task}}/L{{length}}/{{tok}}/seed{{seed}}.parquet",
    log:
        f"{R}/logs/ruler_data/{{task}}-L{{length}}-{{tok}}-seed{{seed}}.log",
    params:
        assets=f"--asset-dir {CFG.ruler['asset_dir']}" if CFG.ruler["asset_dir"] else "",
    conda:
        ENV_MODEL
    shell:
        "python -m reprogrid ruler-data docs --task {wildcards.task} --length {wildcards.length} "
        "--tokenizer {input.tokenizer} --seed {wildcards.seed} {params.assets} --out {output} > {log} 2>&1"
