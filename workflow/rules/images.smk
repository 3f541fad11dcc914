# Stage: images. The pretraining corpus: one frontal image per report (rendered phantom PNGs in the
# IU-Xray layout, or the real IU-Xray PNGs / MIMIC-CXR-JPGs), decoded once into the uint8 store
# results/images/corpus/ (index.parquet + arrays/*.npy + rejects.parquet + meta.json).
#
# The rendered PNGs (results/corpus/{source}/images/) are deliberately not an output: snakemake
# deletes the outputs of a job before it runs, and the PNGs are a cache that makes a re-run render
# only what changed. The store folder is replaced as a whole when the job succeeds; its index and
# meta are update() outputs, so snakemake does not delete them when the job starts and restores
# them if it fails: a failed run leaves the previous store whole.

from medfilip.images.workflow import corpus_findings_inputs, corpus_params

CORPUS = corpus_params(CFG, SETTINGS)


rule corpus_images:
    input:
        # the MeSH mapping + vocabulary, or results/entities.parquet (images.corpus.findings)
        **corpus_findings_inputs(CFG, VOCABULARY),
        shards=expand("results/reports/shards/{shard}.parquet", shard=SHARDS),
    output:
        index=update("results/images/corpus/index.parquet"),
        meta=update("results/images/corpus/meta.json"),
    params:
        config=EFFECTIVE_CONFIG,
        png_dir=CORPUS["png_dir"],
        entities=CORPUS["entities_arg"],
        # every setting that changes the pixels or the index: a change re-runs this rule
        images=CORPUS["images"],
        phantom=CORPUS["phantom"],
        image_root=CORPUS["image_root"],
    threads: workflow.cores
    log:
        "results/logs/corpus_images/corpus_images.log",
    benchmark:
        "results/benchmarks/corpus_images/corpus_images.tsv"
    conda:
        "../envs/medfilip.yaml"
    shell:
        "medfilip -c {params.config} corpus-images --reports {input.shards} {params.entities}"
        " --png-dir {params.png_dir} --out $(dirname {output.index}) --workers {threads}"
        " > {log} 2>&1"
