# Stage: images. The pretraining corpus: one frontal image per report (rendered phantom PNGs in the
# IU-Xray layout, or the real IU-Xray PNGs / MIMIC-CXR-JPGs), decoded once into the uint8 store
# results/images/corpus/ (index.parquet + arrays/*.npy + rejects.parquet + meta.json).
#
# One job per report shard decodes that shard's images into results/images/corpus_parts/{shard}/
# (its own store, renamed into place when the job succeeds): at MIMIC scale the shards decode in
# parallel jobs, and a killed run loses one shard at most, as finished parts are outputs snakemake
# keeps. corpus_images then links the parts' pixels into the corpus store (seconds, no decoding).
#
# The rendered PNGs (results/corpus/{source}/images/) are deliberately not an output: snakemake
# deletes the outputs of a job before it runs, and the PNGs are a cache that makes a re-run render
# only what changed. The store folders are replaced as a whole when a job succeeds; their index
# and meta are update() outputs, so snakemake does not delete them when the job starts and
# restores them if it fails: a failed run leaves the previous store whole.

from medfilip.pipeline.workflows.images import corpus_findings_inputs, corpus_params

CORPUS = corpus_params(CFG)


rule corpus_images_part:
    input:
        # the MeSH mapping + vocabulary, or results/entities.parquet (images.corpus.findings)
        **corpus_findings_inputs(CFG, VOCABULARY),
        shard=paths.REPORT_SHARD,
    output:
        index=update(paths.CORPUS_PART_INDEX),
        meta=update(paths.CORPUS_PART_META),
    log:
        paths.log("corpus_images", "{shard}"),
    benchmark:
        paths.benchmark("corpus_images", "{shard}")
    conda:
        "../envs/medfilip.yaml"
    threads: workflow.cores
    params:
        config=EFFECTIVE_CONFIG,
        png_dir=CORPUS["png_dir"],
        entities=CORPUS["entities_arg"],
        # every setting that changes the pixels or the index: a change re-runs this rule
        settings=settings_param(SETTINGS, "corpus_images_part"),
        image_root=CORPUS["image_root"],
    shell:
        "medfilip -c {params.config} corpus-images --reports {input.shard} {params.entities}"
        " --png-dir {params.png_dir} --out $(dirname {output.index}) --workers {threads}"
        " --no-progress > {log} 2>&1"


rule corpus_images:
    input:
        parts=expand(paths.CORPUS_PART_INDEX, shard=SHARDS),
        metas=expand(paths.CORPUS_PART_META, shard=SHARDS),
    output:
        index=update(paths.CORPUS_STORE_INDEX),
        meta=update(paths.CORPUS_STORE_META),
    log:
        paths.log("corpus_images", "merge"),
    conda:
        "../envs/medfilip.yaml"
    params:
        parts=expand(paths.CORPUS_PART_DIR, shard=SHARDS),
        settings=settings_param(SETTINGS, "corpus_images"),
    shell:
        "medfilip corpus-merge --parts {params.parts} --out $(dirname {output.index}) > {log} 2>&1"
