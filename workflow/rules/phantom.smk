# Stage: phantom. The renderer's contact sheet: every finding category at mild and severe next to
# a normal reference, so a person can judge the simulator that draws every image of the pipeline.


rule phantom_gallery:
    output:
        report(
            paths.PHANTOM_GALLERY,
            caption="../report/phantom_gallery.rst",
            category="Images",
        ),
    log:
        paths.log("phantom_gallery"),
    conda:
        "../envs/medfilip.yaml"
    params:
        config=EFFECTIVE_CONFIG,
        # the appearance knobs: changing them re-renders the sheet
        settings=settings_param(SETTINGS, "phantom_gallery"),
        size=160,
    shell:
        "medfilip -c {params.config} phantom-gallery --out {output} --size {params.size} > {log} 2>&1"
