# Published claims: consistency checks (no model) and the mapping of claims onto the grid's cells.

CLAIM_FILES = CFG.raw.get("claims", {}).get("files", [])
CLAIM_PAIR = ",".join(CFG.raw["claims"][k] for k in ("low", "high")) if all(
    k in CFG.raw.get("claims", {}) for k in ("low", "high")) else ""


rule claims_check:
    input:
        CLAIM_FILES,
    output:
        f"{R}/claims/findings.txt",
    log:
        f"{R}/logs/claims_check.log",
    # exit 1 means "findings were written", which is a result, not a failure
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid claims check {input} > {output} 2> {log} || [ $? -eq 1 ]"


rule claims_map:
    input:
        files=CLAIM_FILES,
        cells=f"{R}/tables/cells.parquet",
        samples=f"{R}/tables/samples.parquet",
        shares=f"{R}/attribution/variance_shares.csv",
    output:
        cells=f"{R}/claims/claim_cells.csv",
        verdicts=f"{R}/claims/verdicts.json",
    log:
        f"{R}/logs/claims_map.log",
    params:
        pair=f"--pair {CLAIM_PAIR}" if CLAIM_PAIR else "",
        seed=CFG.seed,
        out=lambda wc, output: os.path.dirname(output[0]),
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid claims map {input.files} --cells {input.cells} --samples {input.samples} "
        "--shares {input.shares} {params.pair} --seed {params.seed} --out {params.out} > {log} 2>&1"
