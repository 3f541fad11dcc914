# Stage 1: the report corpus -> deterministic Parquet shards (one job writes them all).


rule report_shards:
    input:
        corpus=report_corpus(),
    output:
        shards=expand(paths.REPORT_SHARD, shard=SHARDS),
        rejects=paths.REPORT_REJECTS,
    log:
        paths.log("report_shards"),
    benchmark:
        paths.benchmark("report_shards")
    conda:
        "../envs/medfilip.yaml"
    params:
        config=EFFECTIVE_CONFIG,
        out_dir=parent_dir,
        # not used by the command: listed so that a change of any reports.* key re-runs this rule
        settings=settings_param(SETTINGS, "report_shards"),
        # the corpus path(s) as resolved: pointing at another corpus re-runs this rule even when
        # the new files are older than the shards
        corpus=report_corpus(),
    shell:
        "medfilip -c {params.config} reports --out-dir {params.out_dir} --rejects {output.rejects} > {log} 2>&1"
