# Stage: controlled worlds (docs/worlds.md): phantoms whose visual similarity follows the labels'
# text similarity to a chosen degree, and the arm x rho x g x eta sweep over them. Not part of
# `all` (the CPU grid took 63 min on 2 cores): ask for `worlds` (or a file below) by name.
# MEDFILIP_WORLDS_CONFIG names another worlds file, MEDFILIP_WORLDS_GRID=gpu picks the larger grid
# (the CLI reads it).

WORLDS_CONFIG = os.environ.get("MEDFILIP_WORLDS_CONFIG", "config/worlds.yaml")


rule worlds:
    input:
        paths.WORLDS_TABLE,
        paths.WORLDS_PREDICTIONS,
        paths.WORLDS_FIGURE,
        paths.WORLD_SHOW,


rule world_runs:
    input:
        WORLDS_CONFIG,
    output:
        paths.WORLDS_RUNS,
    log:
        paths.log("world_runs"),
    conda:
        "../envs/medfilip.yaml"
    # one process per core, a share of the worlds each (at most one per world)
    threads: workflow.cores
    # runs accumulate in paths.WORLDS_RUNS_PARTIAL (an interrupted sweep resumes); --publish copies it
    shell:
        "medfilip world --worlds-config {input} --run --jobs {threads} --publish {output} > {log} 2>&1"


rule world_table:
    input:
        cfg=WORLDS_CONFIG,
        runs=paths.WORLDS_RUNS,
    output:
        table=paths.WORLDS_TABLE,
        verdicts=paths.WORLDS_PREDICTIONS,
        figure=paths.WORLDS_FIGURE,
    log:
        paths.log("world_table"),
    conda:
        "../envs/medfilip.yaml"
    shell:
        "medfilip world --worlds-config {input.cfg} --summarise --runs {input.runs}"
        " --table {output.table} --verdicts {output.verdicts} --figure {output.figure} > {log} 2>&1"


rule world_show:
    input:
        WORLDS_CONFIG,
    output:
        paths.WORLD_SHOW,
    log:
        paths.log("world_show"),
    conda:
        "../envs/medfilip.yaml"
    shell:
        "medfilip world --worlds-config {input} --show {output} --rho 1 --gain 1 > {log} 2>&1"
