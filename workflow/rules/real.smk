# Stage: real radiographs (issue 21; docs/real-images.md). Runs when datasets.real_root names the
# cxr_real pack (config/real.yaml). The project's own readers preprocess the pack's NIH (256 and
# 64 px), COVID and adult-only ieee8023 COVID sets, and the NIH and COVID phantom twins, into
# results/real/stores/{name}/; every trained run (and a random-initialised encoder) is then
# evaluated on all of them side by side. The logic is in medfilip.evaluation.real.

from medfilip.pipeline.workflows import real as real_wf

REAL_RUNS = [f"{run}/model.pt" for run in ZEROSHOT_RUNS]


rule real_covid_adult:
    output:
        counts=real_wf.COVID_ADULT_COUNTS,
    log:
        paths.log("real_covid_adult"),
    conda:
        "../envs/medfilip.yaml"
    params:
        config=EFFECTIVE_CONFIG,
        ieee8023=lambda wildcards: real_wf.ieee8023_dir(CFG),
        settings=settings_param(SETTINGS, "real_covid_adult"),
    shell:
        "medfilip -c {params.config} real-covid-adult --ieee8023 {params.ieee8023:q}"
        " --out $(dirname {output.counts}) > {log} 2>&1"


rule real_store:
    input:
        unpack(lambda wildcards: real_wf.store_inputs(CFG, wildcards.name)),
    output:
        index=real_wf.STORE_INDEX,
    log:
        paths.log("real_store", "{name}"),
    benchmark:
        paths.benchmark("real_store", "{name}")
    wildcard_constraints:
        name=real_wf.WILDCARD,
    conda:
        "../envs/medfilip.yaml"
    threads: workflow.cores
    params:
        config=EFFECTIVE_CONFIG,
        dataset=lambda wildcards: real_wf.store_dataset(wildcards.name),
        root=lambda wildcards: real_wf.store_root(CFG, wildcards.name),
        settings=settings_param(SETTINGS, "real_store"),
    shell:
        "medfilip -c {params.config} preprocess-dataset --dataset {params.dataset} --root {params.root:q}"
        " --out $(dirname {output.index}) --workers {threads} --no-progress > {log} 2>&1"


# one job: each model is loaded and each image encoded once for the zero-shot, probe and retrieval tables
rule real_eval:
    input:
        models=REAL_RUNS,
        stores=[real_wf.store_index(n) for n in real_wf.EVAL_SETS],
        knowledge=SETTINGS["knowledge"]["path"],
    output:
        zeroshot=real_wf.TABLES["zeroshot"],
        zeroshot_per_class=real_wf.TABLES["zeroshot_per_class"],
        probe=real_wf.TABLES["probe"],
        probe_per_class=real_wf.TABLES["probe_per_class"],
        probe_figure=real_wf.TABLES["probe_figure"],
        retrieval=real_wf.TABLES["retrieval"],
    log:
        paths.log("real_eval"),
    benchmark:
        paths.benchmark("real_eval")
    conda:
        "../envs/medfilip.yaml"
    threads: workflow.cores
    params:
        config=EFFECTIVE_CONFIG,
        sets=real_wf.named(real_wf.EVAL_SETS),
        probe_sets=real_wf.PROBE_STORES,
        # text variant, thresholds, bootstrap, the probe's fractions / seeds / C grid, retrieval's K
        settings=settings_param(SETTINGS, "real_eval"),
    shell:
        "medfilip -c {params.config} real-eval --runs {input.models} --sets {params.sets}"
        " --probe-sets {params.probe_sets} --zeroshot {output.zeroshot} --zeroshot-per-class {output.zeroshot_per_class}"
        " --probe {output.probe} --probe-per-class {output.probe_per_class} --probe-figure {output.probe_figure}"
        " --retrieval {output.retrieval} > {log} 2>&1"


rule real_gap:
    input:
        stores=[real_wf.store_index(n) for pair in real_wf.GAP_PAIRS for n in pair],
    output:
        table=real_wf.TABLES["gap"],
        figure=real_wf.TABLES["gap_figure"],
    log:
        paths.log("real_gap"),
    benchmark:
        paths.benchmark("real_gap")
    conda:
        "../envs/medfilip.yaml"
    params:
        config=EFFECTIVE_CONFIG,
        phantom=real_wf.gap_named(0),
        real=real_wf.gap_named(1),
        ieee8023=lambda wildcards: real_wf.ieee8023_dir(CFG),
        settings=settings_param(SETTINGS, "real_gap"),
    shell:
        "medfilip -c {params.config} real-gap --phantom {params.phantom} --real {params.real}"
        " --ieee8023 {params.ieee8023:q} --table {output.table} --figure {output.figure} > {log} 2>&1"


rule real_notes:
    input:
        # the rules engine's vocabulary: an edit re-extracts the notes
        vocabulary=VOCABULARY,
    output:
        table=real_wf.TABLES["notes"],
        summary=real_wf.TABLES["notes_summary"],
    log:
        paths.log("real_notes"),
    benchmark:
        paths.benchmark("real_notes")
    conda:
        "../envs/medfilip.yaml"
    params:
        config=EFFECTIVE_CONFIG,
        ieee8023=lambda wildcards: real_wf.ieee8023_dir(CFG),
        settings=settings_param(SETTINGS, "real_notes"),
    shell:
        "medfilip -c {params.config} real-notes --ieee8023 {params.ieee8023:q}"
        " --out {output.table} --summary {output.summary} > {log} 2>&1"
