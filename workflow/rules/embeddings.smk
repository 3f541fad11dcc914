# Stage 4: E_sim embeddings. Every unique label string is embedded once (cached by model + text);
# training turns a batch's SSM target into a gather + matmul over these vectors.
#
# The cache (results/cache/embeddings/{slug}/) is deliberately not an output: snakemake deletes
# a job's outputs before it runs, and the cache must outlive label edits and killed jobs so that
# only new label strings are embedded. The output holds the vectors of exactly the current labels.

from medfilip.embeddings import model_files, model_slug
from medfilip.training.workflow import embedded_variants

EMBEDDINGS_SLUG = model_slug(CFG.embeddings.model)
# what training and evaluation read
EMBEDDINGS = f"results/embeddings/{EMBEDDINGS_SLUG}.parquet"
# the SSM calibration (embeddings.calibration), from label statistics only; training and the heatmap read it
SSM_CALIBRATION = f"results/embeddings/{EMBEDDINGS_SLUG}.calibration.json"


rule embed_labels:
    input:
        labels="results/labels.parquet",
        # a local model folder's files (none for a hub id): new weights re-run the embedding
        model=model_files(CFG.embeddings.model),
    output:
        embeddings=EMBEDDINGS,
        calibration=SSM_CALIBRATION,
    params:
        config=EFFECTIVE_CONFIG,
        # what changes the vectors and the calibration (batch_size and device do not)
        settings={k: SETTINGS["embeddings"][k] for k in ("model", "max_length", "calibration")},
        cache=f"results/cache/embeddings/{EMBEDDINGS_SLUG}",
        # only the variants an SSM is built from (training runs with an SSM target, the heatmap)
        variants=embedded_variants(CFG),
    threads: 2
    resources:
        gpu=gpus(CFG.embeddings.device),
    log:
        "results/logs/embed_labels/embed_labels.log",
    benchmark:
        "results/benchmarks/embed_labels/embed_labels.tsv"
    conda:
        "../envs/medfilip.yaml"
    shell:
        "medfilip -c {params.config} embed --labels {input.labels} --cache {params.cache} --out {output.embeddings}"
        " --calibration {output.calibration}"
        " --variants {params.variants}"
        " --threads {threads} > {log} 2>&1"


rule ssm_heatmap:
    input:
        labels="results/labels.parquet",
        embeddings=EMBEDDINGS,
        calibration=SSM_CALIBRATION,
    output:
        report(
            "results/figures/ssm_heatmap.png",
            caption="../report/ssm_heatmap.rst",
            category="Labels",
        ),
    log:
        "results/logs/ssm_heatmap/ssm_heatmap.log",
    params:
        config=EFFECTIVE_CONFIG,
    conda:
        "../envs/medfilip.yaml"
    shell:
        "medfilip -c {params.config} ssm-heatmap --labels {input.labels} --embeddings {input.embeddings}"
        " --calibration {input.calibration}"
        " --out {output} > {log} 2>&1"
