# Extraction quality: entities scored against the human MeSH annotations of IU-Xray.


rule extraction_quality:
    input:
        reports=expand(paths.REPORT_SHARD, shard=SHARDS),
        entities=paths.ENTITIES,
        mesh_mapping=CFG.quality.mesh_mapping,
        # the mapping's categories are checked against the vocabulary
        vocabulary=VOCABULARY,
    output:
        table=report(
            paths.EXTRACTION_QUALITY_TABLE,
            caption="../report/extraction_quality_table.rst",
            category="Extraction",
        ),
        figure=report(
            paths.EXTRACTION_QUALITY_FIGURE,
            caption="../report/extraction_quality_figure.rst",
            category="Extraction",
        ),
    log:
        paths.log("extraction_quality"),
    conda:
        "../envs/medfilip.yaml"
    params:
        config=EFFECTIVE_CONFIG,
    shell:
        "medfilip -c {params.config} quality --reports {input.reports} --entities {input.entities}"
        " --out {output.table} --figure {output.figure} > {log} 2>&1"
