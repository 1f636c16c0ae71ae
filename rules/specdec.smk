# Speculative decoding study (configs with a `specdec:` section; see reprogrid.specdec and the schema's docs).
# One job per measurement cell (pair x gamma x decoding x mix x chat template): it loads the pair's prepared
# models (rule prepare_model) and measures every configured prompt with the verifier alone and with the drafter.
# Wall-clock speed-ups are only comparable when nothing else runs beside a cell: give the study
# `resources.threads` equal to the cores you pass to snakemake (then cells run one at a time, alone).
import re

from reprogrid.specdec import study_cells as _specdec_cells

SPECDEC_CELLS = _specdec_cells(CFG) if CFG.raw.get("specdec") else {}  # safe to include unconditionally
SD = f"{R}/specdec"


wildcard_constraints:
    sdcell="|".join(re.escape(c) for c in SPECDEC_CELLS),


def specdec_models(wc):
    c = SPECDEC_CELLS[wc.sdcell]
    return {"verifier": f"{R}/models/{c['verifier_key']}", "drafter": f"{R}/models/{c['drafter_key']}"}


def specdec_gpu(wc):
    c = SPECDEC_CELLS[wc.sdcell]
    return int(any(CFG.models[c[role]].get("device") == "cuda" for role in ("verifier", "drafter")))


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
        out=f"{SD}/cells",
    threads: THREADS
    resources:
        mem_mb=16000,
        gpu=specdec_gpu,
    shell:
        "reprogrid specdec run --config {params.config} --cell {wildcards.sdcell} --verifier-dir {input.verifier} "
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
    shell:
        "reprogrid specdec collect --config {params.config} --out {SD} {input.tables} > {log} 2>&1"


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
    shell:
        "reprogrid specdec attribute {input.table} --bootstrap {params.bootstrap} --seed {params.seed} "
        "--out {SD} > {log} 2>&1"
