# The ablation table in the shape of the paper's Table VI (cumulative: report -> Entity -> FG -> SSM
# -> IKI), from the zero-shot summary rows of the runs whose settings fit each row
# (medfilip/evaluation/ablation.py). The embedded default trains only the last row's run (medfilip);
# `--configfile config/ablation.yaml` adds the others.


rule ablation_table:
    input:
        zeroshot=paths.ZEROSHOT_TABLE,
    output:
        report(
            paths.ABLATION_TABLE,
            caption="../report/ablation_table.rst",
            category="Evaluation",
        ),
    log:
        paths.log("ablation_table"),
    conda:
        "../envs/medfilip.yaml"
    params:
        config=EFFECTIVE_CONFIG,
        # which runs fill the rows (training.runs)
        settings=settings_param(SETTINGS, "ablation_table"),
    shell:
        "medfilip -c {params.config} ablation --zeroshot {input.zeroshot} --out {output} > {log} 2>&1"


# Means over seeds per method (runs that differ only in `seed`), with Student-t intervals over
# seeds and differences to medfilip paired by seed (medfilip/evaluation/seeds.py); config/simulation.yaml
# trains 3 seeds of the four runs.
rule seed_summary:
    input:
        zeroshot=paths.ZEROSHOT_TABLE,
    output:
        report(
            paths.SEEDS_TABLE,
            caption="../report/seeds_table.rst",
            category="Evaluation",
        ),
    log:
        paths.log("seed_summary"),
    conda:
        "../envs/medfilip.yaml"
    params:
        config=EFFECTIVE_CONFIG,
        settings=settings_param(SETTINGS, "seed_summary"),
    shell:
        "medfilip -c {params.config} seeds-summary --zeroshot {input.zeroshot} --out {output} > {log} 2>&1"
