# Stage: downstream datasets (RSNA, ChestX-ray14, VinBigData, SIIM-ACR, COVID-19 Radiography).
# With datasets.<name>.root null, a phantom twin is written in the real dataset's layout under
# results/twins/{dataset}/ (labelled from the real label files torchxrayvision ships); either way
# the dataset's reader reads the folder and the images are decoded once into the uint8 store
# results/images/{dataset}/ (index.parquet + arrays/*.npy + rejects.parquet + meta.json).
# The stores of the enabled datasets: medfilip.pipeline.workflows.datasets.dataset_targets(CFG).

from medfilip.pipeline.workflows.datasets import DATASET_WILDCARD, DatasetRules

DATASET_RULES = DatasetRules(CFG)


rule dataset_twin:
    output:
        # written last: the whole twin folder is swapped in when the job succeeds
        manifest=paths.TWIN_MANIFEST,
    log:
        paths.log("dataset_twin", "{dataset}"),
    benchmark:
        paths.benchmark("dataset_twin", "{dataset}")
    wildcard_constraints:
        dataset=DATASET_WILDCARD,
    conda:
        "../envs/medfilip.yaml"
    threads: workflow.cores
    params:
        config=EFFECTIVE_CONFIG,
        # sizes, classes, render size, seed and the phantom's knobs: a change re-renders the twin
        settings=settings_param(SETTINGS, "dataset_twin"),
    shell:
        "medfilip -c {params.config} twin --dataset {wildcards.dataset} --out $(dirname {output.manifest})"
        " --workers {threads} > {log} 2>&1"


rule preprocess_dataset:
    input:
        unpack(DATASET_RULES.store_inputs),
    output:
        index=paths.IMAGE_STORE_INDEX,
        meta=paths.IMAGE_STORE_META,
    log:
        paths.log("preprocess_dataset", "{dataset}"),
    benchmark:
        paths.benchmark("preprocess_dataset", "{dataset}")
    wildcard_constraints:
        dataset=DATASET_WILDCARD,
    conda:
        "../envs/medfilip.yaml"
    threads: workflow.cores
    params:
        config=EFFECTIVE_CONFIG,
        root=DATASET_RULES.root_arg,
        # sizes, classes, seed (real data: the sample and split), images.size and shard size
        settings=settings_param(SETTINGS, "preprocess_dataset"),
    shell:
        "medfilip -c {params.config} preprocess-dataset --dataset {wildcards.dataset} --root {params.root:q}"
        " --out $(dirname {output.index}) --workers {threads} > {log} 2>&1"
