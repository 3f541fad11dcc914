# Stage: evaluation. Zero-shot classification of every trained run on every evaluation set: the
# downstream stores (results/images/{dataset}/) and the MIMIC-style single-label, multi-label and
# fine-grained sets built from the held-out images of the corpus store (results/images/corpus/).
# The lists come from the config (training.runs, datasets.*.enabled or evaluation.datasets,
# evaluation.corpus.enabled) through medfilip.pipeline.workflows.evaluation, which the CLI tests too.

from medfilip.pipeline.workflows.evaluation import configured_run_dirs, configured_set_dirs

ZEROSHOT_RUNS = configured_run_dirs(CFG)
ZEROSHOT_SETS = configured_set_dirs(CFG)
# every store an evaluation reads (retrieval and the case study read the corpus store in any case)
EVAL_STORES = list(dict.fromkeys([*ZEROSHOT_SETS, paths.CORPUS_STORE_DIR]))
# each run's held-out image embeddings, encoded once (rule image_embeddings)
RUN_EMBEDDINGS = [paths.IMAGE_EMBEDDINGS.format(run=Path(run).name) for run in ZEROSHOT_RUNS]


rule image_embeddings:
    input:
        model=paths.MODEL,
        stores=[f"{store}/index.parquet" for store in EVAL_STORES],
    output:
        paths.IMAGE_EMBEDDINGS,
    log:
        paths.log("image_embeddings", "{run}"),
    benchmark:
        paths.benchmark("image_embeddings", "{run}")
    conda:
        "../envs/medfilip.yaml"
    threads: workflow.cores
    resources:
        gpu=gpus(CFG.evaluation.device),
    params:
        config=EFFECTIVE_CONFIG,
    shell:
        "medfilip -c {params.config} embed-images --run {input.model} --stores {input.stores} --out {output}"
        " --threads {threads} > {log} 2>&1"


rule zeroshot:
    input:
        models=[f"{run}/model.pt" for run in ZEROSHOT_RUNS],
        embeddings=RUN_EMBEDDINGS,
        stores=[f"{store}/index.parquet" for store in ZEROSHOT_SETS],
        # the class texts carry each category's explanation (IKI)
        knowledge=SETTINGS["knowledge"]["path"],
        # corpus_severity: the severities the reports state, on the one severity scale
        labels=paths.LABELS,
        severity_scale=f"{CFG.extraction.rules.vocabulary_dir}/severity_scale.yaml",
    output:
        table=report(
            paths.ZEROSHOT_TABLE,
            caption="../report/zeroshot_table.rst",
            category="Zero-shot",
        ),
        per_class=report(
            paths.ZEROSHOT_PER_CLASS,
            caption="../report/zeroshot_per_class.rst",
            category="Zero-shot",
        ),
        figure=report(
            paths.ZEROSHOT_FIGURE,
            caption="../report/zeroshot_figure.rst",
            category="Zero-shot",
        ),
    log:
        paths.log("zeroshot"),
    benchmark:
        paths.benchmark("zeroshot")
    conda:
        "../envs/medfilip.yaml"
    threads: workflow.cores
    resources:
        gpu=gpus(CFG.evaluation.device),
    params:
        config=EFFECTIVE_CONFIG,
        # text variant, protocols, class lists ... (not retrieval's, the probe's, batch size or device)
        settings=settings_param(SETTINGS, "zeroshot"),
    shell:
        "medfilip -c {params.config} zeroshot --runs {input.models} --sets {input.stores}"
        " --image-embeddings {input.embeddings} --knowledge {input.knowledge} --labels {input.labels}"
        " --out {output.table} --per-class {output.per_class}"
        " --figure {output.figure} --no-progress > {log} 2>&1"


# Retrieval (paper Table V) and the case study (paper Fig. 5) read the corpus store's held-out
# images; each run is encoded by the rule itself (at most evaluation.retrieval.max_images images).
rule retrieval:
    input:
        models=[f"{run}/model.pt" for run in ZEROSHOT_RUNS],
        embeddings=RUN_EMBEDDINGS,
        corpus=paths.CORPUS_STORE_INDEX,
        knowledge=SETTINGS["knowledge"]["path"],
    output:
        table=report(
            paths.RETRIEVAL_TABLE,
            caption="../report/retrieval_table.rst",
            category="Retrieval",
        ),
    log:
        paths.log("retrieval"),
    benchmark:
        paths.benchmark("retrieval")
    conda:
        "../envs/medfilip.yaml"
    threads: workflow.cores
    resources:
        gpu=gpus(CFG.evaluation.device),
    params:
        config=EFFECTIVE_CONFIG,
        settings=settings_param(SETTINGS, "retrieval"),
    shell:
        "medfilip -c {params.config} retrieval --runs {input.models} --corpus {input.corpus}"
        " --image-embeddings {input.embeddings} --knowledge {input.knowledge} --out {output.table} --no-progress > {log} 2>&1"


rule case_study:
    input:
        models=[f"{run}/model.pt" for run in ZEROSHOT_RUNS],
        embeddings=RUN_EMBEDDINGS,
        corpus=paths.CORPUS_STORE_INDEX,
        knowledge=SETTINGS["knowledge"]["path"],
    output:
        figure=report(
            paths.CASE_STUDY_FIGURE,
            caption="../report/case_study_figure.rst",
            category="Case study",
        ),
        table=report(
            paths.CASE_STUDY_TABLE,
            caption="../report/case_study_table.rst",
            category="Case study",
        ),
    log:
        paths.log("case_study"),
    benchmark:
        paths.benchmark("case_study")
    conda:
        "../envs/medfilip.yaml"
    params:
        config=EFFECTIVE_CONFIG,
        settings=settings_param(SETTINGS, "case_study"),
    shell:
        "medfilip -c {params.config} case-study --runs {input.models} --corpus {input.corpus}"
        " --image-embeddings {input.embeddings} --knowledge {input.knowledge} --figure {output.figure} --table {output.table} > {log} 2>&1"
