# Stage: segmentation (paper Table IV). A UNet whose encoder is each run's pretrained image encoder,
# and one with a random-init encoder as the baseline, fine-tuned on fractions of the SIIM-ACR train
# split (results/images/siim/), Dice and IoU on test; choices on validate. One job per run and one
# for the baseline (adding a run fine-tunes that run alone), then one table + figure job.
# Logic: medfilip/evaluation/segmentation/ (workflow.py gives the lists and params).

from medfilip.pipeline.workflows.segmentation import job_threads, run_folders

SEGMENTATION_FOLDERS = run_folders(CFG)


rule segmentation_run:
    input:
        model=paths.MODEL,
        store=paths.SEGMENTATION_STORE_INDEX,
    output:
        scores=paths.SEGMENTATION_RUN_SCORES,
        summary=paths.SEGMENTATION_RUN_SUMMARY,
        examples=paths.SEGMENTATION_RUN_EXAMPLES,
    log:
        paths.log("segmentation", "{run}"),
    benchmark:
        paths.benchmark("segmentation", "{run}")
    conda:
        "../envs/medfilip.yaml"
    threads: job_threads(workflow.cores)
    resources:
        gpu=gpus(CFG.evaluation.segmentation.device),
    params:
        config=EFFECTIVE_CONFIG,
        # evaluation.segmentation (but its device): a change re-runs segmentation only
        settings=settings_param(SETTINGS, "segmentation_run"),
    shell:
        "medfilip -c {params.config} segmentation --model {input.model} --run {wildcards.run}"
        " --store {input.store} --out-dir $(dirname {output.summary}) --threads {threads} > {log} 2>&1"


rule segmentation_baseline:
    input:
        store=paths.SEGMENTATION_STORE_INDEX,
    output:
        scores=paths.SEGMENTATION_BASELINE_SCORES,
        summary=paths.SEGMENTATION_BASELINE_SUMMARY,
        examples=paths.SEGMENTATION_BASELINE_EXAMPLES,
    log:
        paths.log("segmentation", "random_init"),
    benchmark:
        paths.benchmark("segmentation", "random_init")
    conda:
        "../envs/medfilip.yaml"
    threads: job_threads(workflow.cores)
    resources:
        gpu=gpus(CFG.evaluation.segmentation.device),
    params:
        config=EFFECTIVE_CONFIG,
        # evaluation.segmentation and training.model's architecture (the random encoder's)
        settings=settings_param(SETTINGS, "segmentation_baseline"),
    shell:
        "medfilip -c {params.config} segmentation --baseline --store {input.store}"
        " --out-dir $(dirname {output.summary}) --threads {threads} > {log} 2>&1"


rule segmentation_table:
    input:
        summaries=[f"{folder}/summary.json" for folder in SEGMENTATION_FOLDERS],
        scores=[f"{folder}/scores.parquet" for folder in SEGMENTATION_FOLDERS],
        examples=[f"{folder}/examples.npz" for folder in SEGMENTATION_FOLDERS],
        store=paths.SEGMENTATION_STORE_INDEX,
    output:
        table=report(
            paths.SEGMENTATION_TABLE,
            caption="../report/segmentation_table.rst",
            category="Segmentation",
        ),
        long=report(
            paths.SEGMENTATION_LONG_TABLE,
            caption="../report/segmentation_long.rst",
            category="Segmentation",
        ),
        figure=report(
            paths.SEGMENTATION_FIGURE,
            caption="../report/segmentation_figure.rst",
            category="Segmentation",
        ),
    log:
        paths.log("segmentation", "table"),
    benchmark:
        paths.benchmark("segmentation", "table")
    conda:
        "../envs/medfilip.yaml"
    params:
        config=EFFECTIVE_CONFIG,
        # the bootstrap resamples: a change re-runs the table, not the fine-tuning
        settings=settings_param(SETTINGS, "segmentation_table"),
    shell:
        "medfilip -c {params.config} segmentation-table --results {input.summaries} --store {input.store}"
        " --out {output.table} --long {output.long} --figure {output.figure} > {log} 2>&1"
