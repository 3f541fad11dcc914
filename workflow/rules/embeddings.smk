# Stage 4: E_sim embeddings. Every unique label string is embedded once (cached by model + text);
# training turns a batch's SSM target into a gather + matmul over these vectors.
#
# The cache (results/cache/embeddings/{slug}/) is deliberately not an output: snakemake deletes
# a job's outputs before it runs, and the cache must outlive label edits and killed jobs so that
# only new label strings are embedded. The output holds the vectors of exactly the current labels.

from medfilip.embeddings import model_files, model_slug
from medfilip.pipeline.workflows.training import embedded_variants

EMBEDDINGS_SLUG = model_slug(CFG.embeddings.model)
# what training and evaluation read
EMBEDDINGS = paths.EMBEDDINGS.format(slug=EMBEDDINGS_SLUG)
# the SSM calibration (embeddings.calibration), from label statistics only; training and the heatmap read it
SSM_CALIBRATION = paths.SSM_CALIBRATION.format(slug=EMBEDDINGS_SLUG)


rule embed_labels:
    input:
        labels=paths.LABELS,
        # a local model folder's files (none for a hub id): new weights re-run the embedding
        model=model_files(CFG.embeddings.model),
        # embeddings.calibration.split: train reads the train split of the report shards
        reports=(expand(paths.REPORT_SHARD, shard=SHARDS) if CFG.embeddings.calibration.split == "train" else []),
    output:
        embeddings=EMBEDDINGS,
        calibration=SSM_CALIBRATION,
    log:
        paths.log("embed_labels"),
    benchmark:
        paths.benchmark("embed_labels")
    conda:
        "../envs/medfilip.yaml"
    threads: 2
    resources:
        gpu=gpus(CFG.embeddings.device),
    params:
        config=EFFECTIVE_CONFIG,
        # what changes the vectors and the calibration (batch_size and device do not) and whether the
        # labels' masked forms are embedded too (entailment targets)
        settings=settings_param(SETTINGS, "embed_labels"),
        cache=paths.EMBEDDINGS_CACHE_DIR.format(slug=EMBEDDINGS_SLUG),
        # only the variants an SSM is built from (training runs with an SSM target, the heatmap)
        variants=embedded_variants(CFG),
        reports=lambda wildcards, input: f"--reports {input.reports}" if input.reports else "",
    shell:
        "medfilip -c {params.config} embed --labels {input.labels} --cache {params.cache} --out {output.embeddings}"
        " --calibration {output.calibration}"
        " --variants {params.variants} {params.reports}"
        " --threads {threads} > {log} 2>&1"


rule ssm_heatmap:
    input:
        labels=paths.LABELS,
        embeddings=EMBEDDINGS,
        calibration=SSM_CALIBRATION,
    output:
        report(
            paths.SSM_HEATMAP,
            caption="../report/ssm_heatmap.rst",
            category="Labels",
        ),
    log:
        paths.log("ssm_heatmap"),
    conda:
        "../envs/medfilip.yaml"
    params:
        config=EFFECTIVE_CONFIG,
    shell:
        "medfilip -c {params.config} ssm-heatmap --labels {input.labels} --embeddings {input.embeddings}"
        " --calibration {input.calibration}"
        " --out {output} > {log} 2>&1"
