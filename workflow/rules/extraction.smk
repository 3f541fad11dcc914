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
        shard="results/reports/shards/{shard}.parquet",
    output:
        "results/extraction/{backend}/{shard}.parquet",
    params:
        config=EFFECTIVE_CONFIG,
        cache_dir="results/cache/extraction/{backend}",
        runs_dir="results/extraction/runs",
        # openai: the model id and generation settings, so changing them re-runs extraction (only)
        model=extraction_settings().get("model", "rules"),
        generation=extraction_settings(),
    resources:
        # caps concurrent calls to an LLM endpoint (profiles set the total); the rules backend makes
        # none, and batch mode only uploads and polls (its shards must not queue behind each other for 24 h)
        llm_requests=1 if BACKEND == "openai" and CFG.extraction.openai.mode == "sync" else 0,
    log:
        "results/logs/extract_triplets/{backend}/{shard}.log",
    benchmark:
        "results/benchmarks/extract_triplets/{backend}/{shard}.tsv"
    conda:
        "../envs/medfilip.yaml"
    shell:
        "medfilip -c {params.config} extract --shards {input.shard} --out {output}"
        " --cache-dir {params.cache_dir} --runs-dir {params.runs_dir} --llm-jobs $MEDFILIP_LLM_JOBS"
        " > {log} 2>&1"


rule entities:
    input:
        extractions=expand("results/extraction/{backend}/{shard}.parquet", backend=BACKEND, shard=SHARDS),
        vocabulary=VOCABULARY,
    output:
        "results/entities.parquet",
    params:
        config=EFFECTIVE_CONFIG,
    log:
        "results/logs/entities/entities.log",
    benchmark:
        "results/benchmarks/entities/entities.tsv"
    conda:
        "../envs/medfilip.yaml"
    shell:
        "medfilip -c {params.config} entities {input.extractions} --out {output} > {log} 2>&1"
