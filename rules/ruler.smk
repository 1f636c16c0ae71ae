# RULER docs: built once per (task, length, sizing tokenizer, seed) with lm-eval's generators.


rule ruler_data:
    input:
        tokenizer=L.tokenizer(),
    output:
        L.docs(),
    log:
        L.log("ruler_data", "{task}-L{length}-{tok}-seed{seed}"),
    benchmark:
        L.benchmark("ruler_data", "{task}-L{length}-{tok}-seed{seed}")
    params:
        assets=f"--asset-dir {W.cfg.ruler['asset_dir']}" if W.cfg.ruler["asset_dir"] else "",
    conda:
        ENV_MODEL
    shell:
        "python -m reprogrid ruler-data docs --task {wildcards.task} --length {wildcards.length} "
        "--tokenizer {input.tokenizer} --seed {wildcards.seed} {params.assets} --out {output} > {log} 2>&1"
