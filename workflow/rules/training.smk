# Stage: pretraining. One job per run of training.runs (medfilip, convirt, medclip, ablations):
# corpus image store + labels (+ label embeddings for SSM targets) -> results/models/{run}/.
#
# checkpoint.pt is deliberately not an output: snakemake deletes the outputs of a failed job, and
# the checkpoint must outlive a killed job so that the re-run resumes from it (it is ignored when
# the settings or inputs changed). text_encoder/ (tokenizer + config) is written beside model.pt.

import re

from medfilip.training.workflow import (
    calibration_input,
    embeddings_input,
    embeddings_option,
    run_names,
    settings_param,
)

TRAIN_RUNS = run_names(CFG)


wildcard_constraints:
    run="|".join(re.escape(name) for name in TRAIN_RUNS),


rule train:
    input:
        images="results/images/corpus/index.parquet",
        meta="results/images/corpus/meta.json",
        labels="results/labels.parquet",
        # the label vectors, for runs whose target is an SSM
        embeddings=embeddings_input(CFG, EMBEDDINGS),
        # the SSM calibration computed with them (label statistics only)
        calibration=calibration_input(CFG, SSM_CALIBRATION),
    output:
        model="results/models/{run}/model.pt",
        train_log="results/models/{run}/train_log.csv",
        run_config="results/models/{run}/config.yaml",
    params:
        config=EFFECTIVE_CONFIG,
        # the training settings with this run's entry: changing them re-runs this run only
        settings=settings_param(SETTINGS),
        embeddings=embeddings_option,
        # torchrun (srun under SLURM) when training.distributed asks for more than one process
        launch=training_launch(CFG.training),
    threads: workflow.cores
    resources:
        gpu=training_gpus(CFG.training),
        nodes=training_nodes(CFG.training),
        mem_mb=8000,
    log:
        "results/logs/train/{run}.log",
    benchmark:
        "results/benchmarks/train/{run}.tsv"
    conda:
        "../envs/medfilip.yaml"
    shell:
        "{params.launch} medfilip -c {params.config} train --run {wildcards.run} --images $(dirname {input.images})"
        " --labels {input.labels} {params.embeddings} --out $(dirname {output.model}) --threads {threads}"
        " --no-progress > {log} 2>&1"


rule train_curves:
    input:
        expand("results/models/{run}/train_log.csv", run=TRAIN_RUNS),
    output:
        report(
            "results/figures/train_curves.png",
            caption="../report/train_curves.rst",
            category="Training",
        ),
    params:
        runs=expand("results/models/{run}", run=TRAIN_RUNS),
    log:
        "results/logs/train_curves/train_curves.log",
    conda:
        "../envs/medfilip.yaml"
    shell:
        "medfilip train-curves --runs {params.runs} --out {output} > {log} 2>&1"
