# Speculative decoding study (configs with a `specdec:` section; see reprogrid.specdec and the schema's docs).
# One job per measurement cell (pair x gamma x decoding x mix x chat template): it loads the pair's prepared
# models (rule prepare_model) and measures every configured prompt with the verifier alone and with the drafter.
# Wall-clock speed-ups are only comparable when nothing else runs beside a cell: give the study
# `resources.threads` equal to the cores you pass to snakemake (then cells run one at a time, alone).
import re

wildcard_constraints:
    sdcell="|".join(re.escape(c) for c in W.specdec_cells) or "__none__",


rule specdec_run:
    input:
        unpack(lambda wc: W.specdec_models(wc.sdcell)),
    output:
        table=L.specdec_cell(kind="table"),
        steps=L.specdec_cell(kind="steps"),
        meta=L.specdec_cell(kind="meta"),
    log:
        L.log("specdec_run", "{sdcell}"),
    benchmark:
        L.benchmark("specdec_run", "{sdcell}")
    params:
        config=CONFIG_PATH,
        out=lambda wc, output: os.path.dirname(output.table),
        settings=W.specdec_cells_hash,
    threads: THREADS
    resources:
        mem_mb=16000,
        gpu=lambda wc: W.specdec_gpu(wc.sdcell),
    conda:
        ENV_MODEL
    shell:
        "python -m reprogrid specdec run --config {params.config} --cell {wildcards.sdcell} --verifier-dir {input.verifier} "
        "--drafter-dir {input.drafter} --threads {threads} --out {params.out} > {log} 2>&1"


rule specdec_summarize:
    input:
        tables=[L.specdec_cell(c, "table") for c in W.specdec_cells],
        steps=[L.specdec_cell(c, "steps") for c in W.specdec_cells],
        metas=[L.specdec_cell(c, "meta") for c in W.specdec_cells],
    output:
        table=L.specdec_table,
        steps=L.specdec_steps,
        disparity=L.specdec_disparity,
    log:
        L.log("specdec_summarize"),
    benchmark:
        L.benchmark("specdec_summarize")
    params:
        config=CONFIG_PATH,
        out=lambda wc, output: os.path.dirname(output.table),
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid specdec collect --config {params.config} --out {params.out} {input.tables} > {log} 2>&1"


rule specdec_attribute:
    input:
        table=L.specdec_table,
    output:
        speedup=L.specdec_attribution("speedup"),
        speedup_json=L.specdec_attribution("speedup", "json"),
        acceptance=L.specdec_attribution("acceptance"),
        acceptance_json=L.specdec_attribution("acceptance", "json"),
    log:
        L.log("specdec_attribute"),
    benchmark:
        L.benchmark("specdec_attribute")
    params:
        bootstrap=W.bootstrap,
        seed=W.cfg.seed,
        out=lambda wc, output: os.path.dirname(output.speedup),
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid specdec attribute {input.table} --bootstrap {params.bootstrap} --seed {params.seed} "
        "--out {params.out} > {log} 2>&1"


# The mitigation (configs whose specdec section has `mitigation:`; reprogrid's s-CDF, reprogrid.specdec.mitigate):
# LoRA fine-tuning of one pair's drafter toward its verifier on its under-served tasks, then the original and the
# mitigated drafter measured on held-out prompts. The mitigated drafter (drafter/, with its checksum), the adapter
# and the before/after tables are written beside mitigation.json.
rule specdec_mitigate:
    input:
        unpack(lambda wc: W.mitigation_models()),
    output:
        summary=L.specdec_mitigation,
    log:
        L.log("specdec_mitigate"),
    benchmark:
        L.benchmark("specdec_mitigate")
    params:
        config=CONFIG_PATH,
        out=lambda wc, output: os.path.dirname(output.summary),
        settings=W.section_hash("specdec"),
    threads: THREADS
    resources:
        mem_mb=16000,
        gpu=lambda wc: W.mitigation_gpu(),
    conda:
        ENV_MODEL
    shell:
        "python -m reprogrid specdec mitigate --config {params.config} --verifier {input.verifier} "
        "--drafter {input.drafter} --threads {threads} --out {params.out} > {log} 2>&1"
