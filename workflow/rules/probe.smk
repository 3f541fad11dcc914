# Stage: linear probe (paper Table II). Frozen image-encoder features of every run are extracted
# once per (run, dataset) into results/features/{run}/{dataset}/{split}.npy (+ .json: image ids,
# model hash), the logistic-regression probes of each run read them (results/probe/runs/...), the
# fine-tuned baselines train on the same subsets (results/probe/baselines/...), and one job scores
# them all with bootstrap intervals. Adding a run adds its features and probe jobs only; changing
# evaluation.linear_probe re-runs the probe fits (and the baselines for their own keys), never the
# feature extraction. The lists (and the check that each probed dataset has a train split) come
# from medfilip.pipeline.workflows.probe.

import re

from medfilip.pipeline.workflows.datasets import DATASET_WILDCARD
from medfilip.pipeline.workflows import probe as probe_wf

try:
    PROBE_ON = probe_wf.probe_enabled(CFG)
except probe_wf.ProbeConfigError as err:
    raise WorkflowError(str(err)) from None
PROBE_BASELINES = probe_wf.baselines(CFG) if PROBE_ON else []


rule features:
    input:
        model=paths.MODEL,
        index=paths.IMAGE_STORE_INDEX,
    output:
        train=paths.feature_file("train"),
        validate=paths.feature_file("validate"),
        test=paths.feature_file("test"),
        train_meta=paths.feature_file("train", ".json"),
        validate_meta=paths.feature_file("validate", ".json"),
        test_meta=paths.feature_file("test", ".json"),
    log:
        paths.log("features", "{run}/{dataset}"),
    benchmark:
        paths.benchmark("features", "{run}/{dataset}")
    wildcard_constraints:
        dataset=DATASET_WILDCARD,
    conda:
        "../envs/medfilip.yaml"
    threads: workflow.cores
    resources:
        gpu=gpus(CFG.evaluation.linear_probe.device),
    params:
        config=EFFECTIVE_CONFIG,
    shell:
        "medfilip -c {params.config} features --run {input.model} --store {input.index}"
        " --out $(dirname {output.train}) > {log} 2>&1"


rule probe_fit:
    input:
        features=rules.features.output,
        index=paths.IMAGE_STORE_INDEX,
        model=paths.MODEL,
    output:
        scores=paths.PROBE_RUN_SCORES,
        meta=paths.PROBE_RUN_META,
    log:
        paths.log("probe_fit", "{run}/{dataset}"),
    benchmark:
        paths.benchmark("probe_fit", "{run}/{dataset}")
    wildcard_constraints:
        dataset=DATASET_WILDCARD,
    conda:
        "../envs/medfilip.yaml"
    threads: 1
    params:
        config=EFFECTIVE_CONFIG,
        # fractions, seeds, C grid: a change refits the probes, not the features
        settings=settings_param(SETTINGS, "probe_fit"),
    shell:
        "medfilip -c {params.config} probe-fit --features $(dirname {input.features[0]}) --store {input.index}"
        " --model {input.model} --name {wildcards.run} --out {output.scores} > {log} 2>&1"


rule probe_baseline:
    input:
        index=paths.IMAGE_STORE_INDEX,
    output:
        scores=paths.PROBE_BASELINE_SCORES,
        meta=paths.PROBE_BASELINE_META,
    log:
        paths.log("probe_baseline", "{baseline}/{dataset}"),
    benchmark:
        paths.benchmark("probe_baseline", "{baseline}/{dataset}")
    wildcard_constraints:
        dataset=DATASET_WILDCARD,
        baseline="|".join(re.escape(b) for b in PROBE_BASELINES) or "no_baseline",
    conda:
        "../envs/medfilip.yaml"
    threads: workflow.cores
    resources:
        gpu=gpus(CFG.evaluation.linear_probe.device),
    params:
        config=EFFECTIVE_CONFIG,
        # fractions, seeds, the baselines' size and training keys, the ResNet's arch and weights
        settings=settings_param(SETTINGS, "probe_baseline"),
    shell:
        "medfilip -c {params.config} probe-baseline --name {wildcards.baseline} --store {input.index}"
        " --out {output.scores} > {log} 2>&1"


rule linear_probe:
    input:
        scores=probe_wf.score_files(CFG) if PROBE_ON else [],
    output:
        table=report(
            paths.LINEAR_PROBE_TABLE,
            caption="../report/linear_probe_table.rst",
            category="Linear probe",
        ),
        per_class=report(
            paths.LINEAR_PROBE_PER_CLASS,
            caption="../report/linear_probe_per_class.rst",
            category="Linear probe",
        ),
        figure=report(
            paths.LINEAR_PROBE_FIGURE,
            caption="../report/linear_probe_figure.rst",
            category="Linear probe",
        ),
    log:
        paths.log("linear_probe"),
    benchmark:
        paths.benchmark("linear_probe")
    conda:
        "../envs/medfilip.yaml"
    threads: 1
    params:
        config=EFFECTIVE_CONFIG,
        # the bootstrap (resamples, seed) and the skipped-baseline rows
        settings=settings_param(SETTINGS, "linear_probe"),
        skipped=[probe_wf.skipped_baselines(CFG), probe_wf.dataset_skips(CFG)] if PROBE_ON else [],
    shell:
        "medfilip -c {params.config} linear-probe --scores {input.scores:q} --out {output.table}"
        " --per-class {output.per_class} --figure {output.figure} > {log} 2>&1"
