# Extraction quality: entities scored against the human MeSH annotations of IU-Xray.


rule extraction_quality:
    input:
        reports=expand("results/reports/shards/{shard}.parquet", shard=SHARDS),
        entities="results/entities.parquet",
        mesh_mapping=CFG.quality.mesh_mapping,
        # the mapping's categories are checked against the vocabulary
        vocabulary=VOCABULARY,
    output:
        table=report(
            "results/tables/extraction_quality.csv",
            caption="../report/extraction_quality_table.rst",
            category="Extraction",
        ),
        figure=report(
            "results/figures/extraction_quality.png",
            caption="../report/extraction_quality_figure.rst",
            category="Extraction",
        ),
    params:
        config=EFFECTIVE_CONFIG,
    log:
        "results/logs/extraction_quality/extraction_quality.log",
    conda:
        "../envs/medfilip.yaml"
    shell:
        "medfilip -c {params.config} quality --reports {input.reports} --entities {input.entities}"
        " --out {output.table} --figure {output.figure} > {log} 2>&1"
