# Stage: evaluation. Zero-shot classification of every trained run on every evaluation set: the
# downstream stores (results/images/{dataset}/) and the MIMIC-style single-label, multi-label and
# fine-grained sets built from the held-out images of the corpus store (results/images/corpus/).
# The lists come from the config (training.runs, datasets.*.enabled or evaluation.datasets,
# evaluation.corpus.enabled) through medfilip.evaluation.sets, which the CLI tests too.

from medfilip.evaluation.sets import configured_run_dirs, configured_set_dirs

ZEROSHOT_RUNS = configured_run_dirs(CFG)
ZEROSHOT_SETS = configured_set_dirs(CFG)


rule zeroshot:
    input:
        models=[f"{run}/model.pt" for run in ZEROSHOT_RUNS],
        stores=[f"{store}/index.parquet" for store in ZEROSHOT_SETS],
        # the class texts carry each category's explanation (IKI)
        knowledge=SETTINGS["knowledge"]["path"],
    output:
        table=report(
            "results/tables/zeroshot.csv",
            caption="../report/zeroshot_table.rst",
            category="Zero-shot",
        ),
        per_class=report(
            "results/tables/zeroshot_per_class.csv",
            caption="../report/zeroshot_per_class.rst",
            category="Zero-shot",
        ),
        figure=report(
            "results/figures/zeroshot.png",
            caption="../report/zeroshot_figure.rst",
            category="Zero-shot",
        ),
    params:
        config=EFFECTIVE_CONFIG,
        # text variant, protocols, class lists ...: a change re-runs the table
        evaluation=SETTINGS["evaluation"],
    threads: workflow.cores
    log:
        "results/logs/zeroshot/zeroshot.log",
    benchmark:
        "results/benchmarks/zeroshot/zeroshot.tsv"
    conda:
        "../envs/medfilip.yaml"
    shell:
        "medfilip -c {params.config} zeroshot --runs {input.models} --sets {input.stores}"
        " --knowledge {input.knowledge} --out {output.table} --per-class {output.per_class}"
        " --figure {output.figure} --no-progress > {log} 2>&1"
