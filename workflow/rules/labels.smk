# Stage 3: structured labels (paper eq. 10 template + the knowledge dictionary), every
# configured variant in one file. Editing the dictionary re-runs this and what depends on
# it, never extraction.


rule structured_labels:
    input:
        reports=expand("results/reports/shards/{shard}.parquet", shard=SHARDS),
        entities="results/entities.parquet",
        # each report's extraction status: a failed extraction gives no labels, never "normal"
        extractions=expand("results/extraction/{backend}/{shard}.parquet", backend=BACKEND, shard=SHARDS),
        knowledge=CFG.knowledge.path,
        # default locations per category (left out of the label text)
        vocabulary=VOCABULARY,
    output:
        labels="results/labels.parquet",
        stats=report(
            "results/tables/label_stats.csv",
            caption="../report/label_stats.rst",
            category="Labels",
        ),
    params:
        config=EFFECTIVE_CONFIG,
        settings=SETTINGS["labels"],
    log:
        "results/logs/structured_labels/structured_labels.log",
    conda:
        "../envs/medfilip.yaml"
    shell:
        "medfilip -c {params.config} labels --reports {input.reports} --entities {input.entities}"
        " --extractions {input.extractions} --out {output.labels} --stats {output.stats} > {log} 2>&1"
