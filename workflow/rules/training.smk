# Stage: pretraining. One job per run of training.runs (medfilip, convirt, medclip, ablations):
# corpus image store + labels (+ label embeddings for SSM targets) -> results/models/{run}/.
#
# checkpoint.pt is deliberately not an output: snakemake deletes the outputs of a failed job, and
# the checkpoint must outlive a killed job so that the re-run resumes from it (it is ignored when
# the settings or inputs changed). text_encoder/ (tokenizer + config) is written beside model.pt.

import re

from medfilip.pipeline.workflows.training import (
    calibration_input,
    embeddings_input,
    embeddings_option,
    run_names,
)

TRAIN_RUNS = run_names(CFG)


wildcard_constraints:
    run="|".join(re.escape(name) for name in TRAIN_RUNS),


rule train:
    input:
        images=paths.CORPUS_STORE_INDEX,
        meta=paths.CORPUS_STORE_META,
        labels=paths.LABELS,
        # the label vectors, for runs whose target is an SSM
        embeddings=embeddings_input(CFG, EMBEDDINGS),
        # the SSM calibration computed with them (label statistics only)
        calibration=calibration_input(CFG, SSM_CALIBRATION),
    output:
        model=paths.MODEL,
        train_log=paths.TRAIN_LOG,
        run_config=paths.RUN_CONFIG,
    log:
        paths.log("train", "{run}"),
    benchmark:
        paths.benchmark("train", "{run}")
    conda:
        "../envs/medfilip.yaml"
    threads: workflow.cores
    resources:
        gpu=training_gpus(CFG.training),
        nodes=training_nodes(CFG.training),
        mem_mb=8000,
    params:
        config=EFFECTIVE_CONFIG,
        # the training settings with this run's entry: changing them re-runs this run only
        settings=settings_param(SETTINGS, "train"),
        embeddings=embeddings_option,
        # torchrun (srun under SLURM) when training.distributed asks for more than one process
        launch=training_launch(CFG.training),
    shell:
        "{params.launch} medfilip -c {params.config} train --run {wildcards.run} --images $(dirname {input.images})"
        " --labels {input.labels} {params.embeddings} --out $(dirname {output.model}) --threads {threads}"
        " --no-progress > {log} 2>&1"


rule train_curves:
    input:
        expand(paths.TRAIN_LOG, run=TRAIN_RUNS),
    output:
        report(
            paths.TRAIN_CURVES,
            caption="../report/train_curves.rst",
            category="Training",
        ),
    log:
        paths.log("train_curves"),
    conda:
        "../envs/medfilip.yaml"
    params:
        runs=expand(paths.MODEL_DIR, run=TRAIN_RUNS),
        settings=settings_param(SETTINGS, "train_curves"),
    shell:
        "medfilip train-curves --runs {params.runs} --out {output} > {log} 2>&1"
