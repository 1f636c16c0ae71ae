# Protocol pitfalls: each mistake measured against the study's reference protocol, paired on items.


rule pitfalls:
    input:
        samples=L.samples,
        cells=L.cells,
    output:
        table=L.pitfalls_table,
        details=L.pitfalls_json,
    log:
        L.log("pitfalls"),
    benchmark:
        L.benchmark("pitfalls")
    params:
        config=CONFIG_PATH,
        section=W.section_hash("pitfalls", "seed"),
        out=lambda wc, output: os.path.dirname(output.table),
    conda:
        ENV_ANALYSIS
    shell:
        "python -m reprogrid pitfalls --config {params.config} --samples {input.samples} --cells {input.cells} "
        "--out {params.out} > {log} 2>&1"
