# Stage 3: structured labels (paper eq. 10 template + the knowledge dictionary), every
# configured variant in one file. Editing the dictionary re-runs this and what depends on
# it, never extraction.

from medfilip.labels.templates import severity_scale_input


rule structured_labels:
    input:
        reports=expand(paths.REPORT_SHARD, shard=SHARDS),
        entities=paths.ENTITIES,
        # each report's extraction status: a failed extraction gives no labels, never "normal"
        extractions=expand(paths.EXTRACTION_SHARD, backend=BACKEND, shard=SHARDS),
        knowledge=CFG.knowledge.path,
        # default locations per category (left out of the label text)
        vocabulary=VOCABULARY,
        # labels.severity_scale: three_level reads the one severity scale
        severity_scale=severity_scale_input(CFG),
    output:
        labels=paths.LABELS,
        stats=report(
            paths.LABEL_STATS,
            caption="../report/label_stats.rst",
            category="Labels",
        ),
    log:
        paths.log("structured_labels"),
    conda:
        "../envs/medfilip.yaml"
    params:
        config=EFFECTIVE_CONFIG,
        settings=settings_param(SETTINGS, "structured_labels"),
    shell:
        "medfilip -c {params.config} labels --reports {input.reports} --entities {input.entities}"
        " --extractions {input.extractions} --out {output.labels} --stats {output.stats} > {log} 2>&1"
