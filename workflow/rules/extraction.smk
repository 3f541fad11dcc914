# Stage 2: reports -> (severity, location, category) triplets, one job per shard,
# then all shards flattened into results/entities.parquet.
#
# The extraction cache (results/cache/extraction/{backend}/) is deliberately not an
# output: snakemake deletes the outputs of a failed job, and the cache must outlive a
# killed job so that the re-run resumes where it stopped.


# {backend} can only be the configured one: the CLI takes the backend from the config.
wildcard_constraints:
    shard=r"\d+",
    backend=BACKEND,


# The API key comes from the environment only (never the config): snakemake stops before
# any job when the variable is unset, and passes it on to cluster jobs.
if BACKEND == "openai":

    envvars:
        CFG.extraction.openai.api_key_env,


rule extract_triplets:
    input:
        # the vocabulary (rules) or the prompt file (openai): editing it re-runs extraction
        unpack(extraction_inputs),
        shard=paths.REPORT_SHARD,
    output:
        paths.EXTRACTION_SHARD,
    log:
        paths.log("extract_triplets", "{backend}/{shard}"),
    benchmark:
        paths.benchmark("extract_triplets", "{backend}/{shard}")
    conda:
        "../envs/medfilip.yaml"
    resources:
        # caps concurrent calls to an LLM endpoint (profiles set the total); the rules backend makes
        # none, and batch mode only uploads and polls (its shards must not queue behind each other for 24 h)
        llm_requests=1 if BACKEND == "openai" and CFG.extraction.openai.mode == "sync" else 0,
    params:
        config=EFFECTIVE_CONFIG,
        cache_dir=paths.EXTRACTION_CACHE_DIR,
        runs_dir=paths.EXTRACTION_RUNS_DIR,
        # openai: the model id and generation settings, so changing them re-runs extraction (only)
        model=extraction_settings().get("model", "rules"),
        generation=extraction_settings(),
    shell:
        "medfilip -c {params.config} extract --shards {input.shard} --out {output}"
        " --cache-dir {params.cache_dir} --runs-dir {params.runs_dir} --llm-jobs $MEDFILIP_LLM_JOBS"
        " > {log} 2>&1"


rule entities:
    input:
        extractions=expand(paths.EXTRACTION_SHARD, backend=BACKEND, shard=SHARDS),
        vocabulary=VOCABULARY,
    output:
        paths.ENTITIES,
    log:
        paths.log("entities"),
    benchmark:
        paths.benchmark("entities")
    conda:
        "../envs/medfilip.yaml"
    params:
        config=EFFECTIVE_CONFIG,
    shell:
        "medfilip -c {params.config} entities {input.extractions} --out {output} > {log} 2>&1"
