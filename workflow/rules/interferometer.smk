# Rules: the interferometer (radiogen.interferometer; CLI radiogen interferometer):
# the map's intrinsic sky (Jy/pixel, before the beam) observed by LOFAR HBA in
# measurement sets (python-casacore), predicted and imaged by WSClean (Debian
# package wsclean).  The band is split into skymap.interferometer.channel_blocks
# blocks; each block is built and predicted in its own job (wildcard `block`),
# the blocks' unit noise is imaged together to calibrate the noise, and all
# blocks are imaged together.  Resources scale with the observation's size
# (interferometer_resources, common.smk).
from radiogen.interferometer.settings import (
    settings_json as interferometer_settings_json,
)

SKYMAP_INTERFEROMETER = SKYMAP["interferometer"]
INTERFEROMETER_SETTINGS = interferometer_settings_json(SKYMAP_INTERFEROMETER)


rule skymap_interferometer_block:
    input:
        header=results("skymap", "map_header.txt"),
        sky_model=results("skymap", "intrinsic_sky.fits"),
    output:
        directory(
            results("skymap", "interferometer", "blocks", "{block}", "predicted.ms")
        ),
    log:
        main=results("logs", "skymap", "interferometer_block_{block}.log"),
        wsclean=results("logs", "skymap", "interferometer_block_{block}_wsclean.log"),
    benchmark:
        results("benchmarks", "skymap", "interferometer_block_{block}.tsv")
    wildcard_constraints:
        block=r"\d+",
    conda:
        "../../envs/interferometer.yaml"
    threads: SKYMAP_INTERFEROMETER["threads"]
    resources:
        mem_mb=interferometer_resources("block").mem_mb,
        runtime=interferometer_resources("block").runtime_min,
    params:
        settings=INTERFEROMETER_SETTINGS,
        seed=config["seed"],
    shell:
        "radiogen interferometer block --header {input.header:q} --sky-model {input.sky_model:q}"
        " --settings {params.settings:q} --block {wildcards.block} --seed {params.seed}"
        " --wsclean-log {log.wsclean:q} --output {output:q} > {log.main:q} 2>&1"


rule skymap_interferometer_noise:
    input:
        ms=interferometer_block_sets("predicted"),
        header=results("skymap", "map_header.txt"),
    output:
        results("skymap", "interferometer", "noise_calibration.json"),
    log:
        main=results("logs", "skymap", "interferometer_noise.log"),
        wsclean=results("logs", "skymap", "interferometer_noise_wsclean.log"),
    benchmark:
        results("benchmarks", "skymap", "interferometer_noise.tsv")
    conda:
        "../../envs/interferometer.yaml"
    threads: SKYMAP_INTERFEROMETER["threads"]
    resources:
        mem_mb=interferometer_resources("noise").mem_mb,
        runtime=interferometer_resources("noise").runtime_min,
    params:
        settings=INTERFEROMETER_SETTINGS,
        noise_rms_ujy=SKYMAP["noise_rms_ujy"],
        seed=config["seed"],
    shell:
        "radiogen interferometer calibrate-noise --ms {input.ms:q} --header {input.header:q}"
        " --settings {params.settings:q} --noise-rms-ujy {params.noise_rms_ujy} --seed {params.seed}"
        " --wsclean-log {log.wsclean:q} --output {output:q} > {log.main:q} 2>&1"


rule skymap_interferometer_add_noise:
    input:
        ms=results("skymap", "interferometer", "blocks", "{block}", "predicted.ms"),
        calibration=results("skymap", "interferometer", "noise_calibration.json"),
    output:
        directory(
            results("skymap", "interferometer", "blocks", "{block}", "observed.ms")
        ),
    log:
        results("logs", "skymap", "interferometer_add_noise_{block}.log"),
    benchmark:
        results("benchmarks", "skymap", "interferometer_add_noise_{block}.tsv")
    wildcard_constraints:
        block=r"\d+",
    conda:
        "../../envs/interferometer.yaml"
    resources:
        mem_mb=interferometer_resources("add_noise").mem_mb,
        runtime=interferometer_resources("add_noise").runtime_min,
    params:
        settings=INTERFEROMETER_SETTINGS,
        seed=config["seed"],
    shell:
        "radiogen interferometer add-noise --ms {input.ms:q} --calibration {input.calibration:q}"
        " --settings {params.settings:q} --block {wildcards.block} --seed {params.seed}"
        " --output {output:q} > {log:q} 2>&1"


rule skymap_interferometer_image:
    input:
        ms=interferometer_block_sets("observed"),
        header=results("skymap", "map_header.txt"),
    output:
        restored=results("skymap", "interferometer", "map-image.fits"),
        residual=results("skymap", "interferometer", "map-residual.fits"),
        model=results("skymap", "interferometer", "map-model.fits"),
        psf=results("skymap", "interferometer", "map-psf.fits"),
        dirty=results("skymap", "interferometer", "map-dirty.fits"),
    log:
        main=results("logs", "skymap", "interferometer_image.log"),
        wsclean=results("logs", "skymap", "interferometer_image_wsclean.log"),
    benchmark:
        results("benchmarks", "skymap", "interferometer_image.tsv")
    conda:
        "../../envs/interferometer.yaml"
    threads: SKYMAP_INTERFEROMETER["threads"]
    resources:
        mem_mb=interferometer_resources("image").mem_mb,
        runtime=interferometer_resources("image").runtime_min,
    params:
        settings=INTERFEROMETER_SETTINGS,
        prefix=lambda wildcards, output: output.restored[: -len("-image.fits")],
    shell:
        "radiogen interferometer image --ms {input.ms:q} --header {input.header:q}"
        " --settings {params.settings:q} --prefix {params.prefix:q} --wsclean-log {log.wsclean:q}"
        " > {log.main:q} 2>&1"


# The restored map searched and matched to the truth with the image-plane map's
# library functions (radiogen skymap find|validate), then the two side by side.
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


if SKYMAP["enabled"] and SKYMAP_INTERFEROMETER["enabled"]:
    ALL_TARGETS += [
        results("skymap", "interferometer", "map-image.fits"),
        results("skymap", "interferometer", "map-residual.fits"),
        results("skymap", "interferometer", "map-psf.fits"),
        results("skymap", "interferometer", "validation.tsv"),
        results("skymap", "interferometer", "comparison.tsv"),
        results("skymap", "interferometer", "imaging.png"),
    ]
