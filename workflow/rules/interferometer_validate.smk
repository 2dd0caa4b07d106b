# Rules: the interferometric map (interferometer.smk) searched and matched to the
# truth with the image-plane map's library functions (radiogen skymap
# find|validate), the two maps side by side, and the imaging figure.


rule skymap_interferometer_find:
    input:
        results("skymap", "interferometer", "map-image.fits"),
    output:
        results("skymap", "interferometer", "recovered.csv"),
    log:
        results("logs", "skymap", "interferometer_find.log"),
    benchmark:
        results("benchmarks", "skymap", "interferometer_find.tsv")
    conda:
        "../../envs/pybdsf.yaml"
    resources:
        mem_mb=SKYMAP["mem_mb"],
        runtime=SKYMAP["runtime_min"],
    params:
        settings=SKYMAP_SETTINGS,
    shell:
        "radiogen skymap find --map {input:q} --settings {params.settings:q}"
        " --output {output:q} > {log:q} 2>&1"


rule skymap_interferometer_validate:
    input:
        map=results("skymap", "interferometer", "map-image.fits"),
        sky_model=results("skymap", "sky_model.fits"),
        truth=results("skymap", "truth.csv"),
        recovered=results("skymap", "interferometer", "recovered.csv"),
        sources=results("skymap", "sources.csv"),
    output:
        table=report(
            results("skymap", "interferometer", "validation.tsv"),
            caption="../report/skymap_interferometer_validation.rst",
            category="Simulated survey map",
            labels={"table": "interferometric map: recovery summary"},
        ),
        figure=report(
            results("skymap", "interferometer", "validation.png"),
            caption="../report/skymap_interferometer_validation.rst",
            category="Simulated survey map",
            labels={"figure": "interferometric map: recovery and counts"},
        ),
        map_figure=report(
            results("skymap", "interferometer", "map.png"),
            caption="../report/skymap_interferometer_validation.rst",
            category="Simulated survey map",
            labels={"figure": "interferometric map with truth and PyBDSF positions"},
        ),
    log:
        results("logs", "skymap", "interferometer_validate.log"),
    benchmark:
        results("benchmarks", "skymap", "interferometer_validate.tsv")
    conda:
        "../../envs/plotting.yaml"
    params:
        settings=SKYMAP_SETTINGS,
        name=f"{SKYMAP_NAME}_interferometric",
    shell:
        "radiogen skymap validate --map {input.map:q} --sky-model {input.sky_model:q}"
        " --truth {input.truth:q}"
        " --recovered {input.recovered:q} --sources {input.sources:q}"
        " --settings {params.settings:q} --name {params.name:q} --table {output.table:q}"
        " --figure {output.figure:q} --map-figure {output.map_figure:q} > {log:q} 2>&1"


rule skymap_interferometer_compare:
    input:
        image_plane=results("skymap", "validation.tsv"),
        interferometric=results("skymap", "interferometer", "validation.tsv"),
    output:
        table=report(
            results("skymap", "interferometer", "comparison.tsv"),
            caption="../report/skymap_interferometer_comparison.rst",
            category="Simulated survey map",
            labels={"table": "image-plane vs interferometric map"},
        ),
        figure=report(
            results("skymap", "interferometer", "comparison.png"),
            caption="../report/skymap_interferometer_comparison.rst",
            category="Simulated survey map",
            labels={"figure": "image-plane vs interferometric map"},
        ),
    log:
        results("logs", "skymap", "interferometer_compare.log"),
    benchmark:
        results("benchmarks", "skymap", "interferometer_compare.tsv")
    conda:
        "../../envs/plotting.yaml"
    shell:
        "radiogen skymap compare --validation image-plane={input.image_plane:q}"
        " --validation interferometric={input.interferometric:q}"
        " --table {output.table:q} --figure {output.figure:q} > {log:q} 2>&1"


rule skymap_interferometer_figure:
    input:
        restored=results("skymap", "interferometer", "map-image.fits"),
        residual=results("skymap", "interferometer", "map-residual.fits"),
        psf=results("skymap", "interferometer", "map-psf.fits"),
    output:
        report(
            results("skymap", "interferometer", "imaging.png"),
            caption="../report/skymap_interferometer_imaging.rst",
            category="Simulated survey map",
            labels={"figure": "interferometric map: restored, residual, PSF"},
        ),
    log:
        results("logs", "skymap", "interferometer_figure.log"),
    benchmark:
        results("benchmarks", "skymap", "interferometer_figure.tsv")
    conda:
        "../../envs/plotting.yaml"
    params:
        title=f"{SKYMAP_NAME} observed by LOFAR HBA, imaged by WSClean",
    shell:
        "radiogen interferometer figure --restored {input.restored:q} --residual {input.residual:q}"
        " --psf {input.psf:q} --title {params.title:q} --output {output:q} > {log:q} 2>&1"
