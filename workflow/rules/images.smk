# Stage: images. The pretraining corpus: one frontal image per report (rendered phantom PNGs in the
# IU-Xray layout, or the real IU-Xray PNGs / MIMIC-CXR-JPGs), decoded once into the uint8 store
# results/images/corpus/ (index.parquet + arrays/*.npy + rejects.parquet + meta.json).
#
# The rendered PNGs (results/corpus/{source}/images/) are deliberately not an output: snakemake
# deletes the outputs of a job before it runs, and the PNGs are a cache that makes a re-run render
# only what changed. The store folder is replaced as a whole when the job succeeds.


def corpus_findings_inputs(wildcards):
    """What decides the drawn findings: the MeSH mapping + vocabulary, or the extracted entities."""
    if CFG.images.corpus.findings == "entities":
        return {"entities": "results/entities.parquet"}
    return {"mesh_mapping": str(CFG.quality.mesh_mapping), "vocabulary": VOCABULARY}


def corpus_rendered():
    """Phantoms are rendered unless real corpus images are configured (MIMIC-CXR is always real)."""
    return CFG.images.corpus.image_root is None and CFG.reports.source == "iu_xray"


rule corpus_images:
    input:
        unpack(corpus_findings_inputs),
        shards=expand("results/reports/shards/{shard}.parquet", shard=SHARDS),
    output:
        index="results/images/corpus/index.parquet",
        meta="results/images/corpus/meta.json",
    params:
        config=EFFECTIVE_CONFIG,
        out_dir="results/images/corpus",
        png_dir=f"results/corpus/{CFG.reports.source}/images",
        # every setting that changes the pixels or the index: a change re-runs this rule
        images=SETTINGS["images"],
        phantom=SETTINGS["phantom"] if corpus_rendered() else {},
        mimic_image_root=SETTINGS["reports"]["mimic_cxr"]["image_root"] if not corpus_rendered() else None,
        entities="--entities results/entities.parquet" if CFG.images.corpus.findings == "entities" else "",
    threads: workflow.cores
    log:
        "results/logs/corpus_images/corpus_images.log",
    benchmark:
        "results/benchmarks/corpus_images/corpus_images.tsv"
    conda:
        "../envs/medfilip.yaml"
    shell:
        "medfilip -c {params.config} corpus-images --reports {input.shards} {params.entities}"
        " --png-dir {params.png_dir} --out {params.out_dir} --workers {threads} --no-progress"
        " > {log} 2>&1"
