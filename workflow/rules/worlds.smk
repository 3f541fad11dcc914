# Stage: controlled worlds (docs/worlds.md): phantoms whose visual similarity follows the labels'
# text similarity to a chosen degree, and the arm x rho x g x eta sweep over them. Not part of
# `all` (the CPU grid takes about two hours): ask for `worlds` (or a file below) by name.
# MEDFILIP_WORLDS_CONFIG names another worlds file, MEDFILIP_WORLDS_GRID=gpu the larger grid.

WORLDS_CONFIG = os.environ.get("MEDFILIP_WORLDS_CONFIG", "config/worlds.yaml")
WORLDS_GRID = os.environ.get("MEDFILIP_WORLDS_GRID", "cpu")
WORLDS_DIR = "results/worlds"


rule worlds:
    input:
        "results/tables/worlds.csv",
        "results/tables/worlds_predictions.csv",
        "results/figures/worlds.png",
        "results/figures/world_show.png",


rule world_runs:
    input:
        WORLDS_CONFIG,
    output:
        f"{WORLDS_DIR}/runs.csv",
    log:
        paths.log("world_runs"),
    conda:
        "../envs/medfilip.yaml"
    params:
        grid=WORLDS_GRID,
        # runs accumulate here, so an interrupted sweep resumes; the output is its copy
        partial=f"{WORLDS_DIR}/runs.partial.csv",
        texts=f"{WORLDS_DIR}/texts.npz",
    shell:
        "(medfilip world --worlds-config {input} --grid {params.grid} --run --runs {params.partial}"
        " --text-cache {params.texts} && cp {params.partial} {output}) > {log} 2>&1"


rule world_table:
    input:
        cfg=WORLDS_CONFIG,
        runs=f"{WORLDS_DIR}/runs.csv",
    output:
        table="results/tables/worlds.csv",
        verdicts="results/tables/worlds_predictions.csv",
        figure="results/figures/worlds.png",
    log:
        paths.log("world_table"),
    conda:
        "../envs/medfilip.yaml"
    params:
        grid=WORLDS_GRID,
    shell:
        "medfilip world --worlds-config {input.cfg} --grid {params.grid} --summarise --runs {input.runs}"
        " --table {output.table} --verdicts {output.verdicts} --figure {output.figure} > {log} 2>&1"


rule world_show:
    input:
        WORLDS_CONFIG,
    output:
        "results/figures/world_show.png",
    log:
        paths.log("world_show"),
    conda:
        "../envs/medfilip.yaml"
    params:
        texts=f"{WORLDS_DIR}/texts.npz",
    shell:
        "medfilip world --worlds-config {input} --show {output} --rho 1 --gain 1"
        " --text-cache {params.texts} > {log} 2>&1"
