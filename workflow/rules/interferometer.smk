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
# Each job gets the keys it reads: a changed CLEAN setting reruns the imaging only,
# a changed weighting the noise calibration and what follows, not the prediction.
INTERFEROMETER_SETTINGS = {
    stage: interferometer_settings_json(SKYMAP_INTERFEROMETER, stage=stage)
    for stage in ("observation", "noise", "image")
}


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
        settings=INTERFEROMETER_SETTINGS["observation"],
        seed=config["seed"],
    shell:
        "radiogen interferometer block --header {input.header:q} --sky-model {input.sky_model:q}"
        " --settings {params.settings:q} --threads {threads} --block {wildcards.block}"
        " --seed {params.seed} --wsclean-log {log.wsclean:q} --output {output:q} > {log.main:q} 2>&1"


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
        settings=INTERFEROMETER_SETTINGS["noise"],
        noise_rms_ujy=SKYMAP["noise_rms_ujy"],
        seed=config["seed"],
    shell:
        "radiogen interferometer calibrate-noise --ms {input.ms:q} --header {input.header:q}"
        " --settings {params.settings:q} --threads {threads} --noise-rms-ujy {params.noise_rms_ujy}"
        " --seed {params.seed}"
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
        settings=INTERFEROMETER_SETTINGS["observation"],
        seed=config["seed"],
    shell:
        "radiogen interferometer add-noise --ms {input.ms:q} --calibration {input.calibration:q}"
        " --settings {params.settings:q} --threads {threads} --block {wildcards.block}"
        " --seed {params.seed} --output {output:q} > {log:q} 2>&1"


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
        settings=INTERFEROMETER_SETTINGS["image"],
        prefix=lambda wildcards, output: output.restored[: -len("-image.fits")],
    shell:
        "radiogen interferometer image --ms {input.ms:q} --header {input.header:q}"
        " --settings {params.settings:q} --threads {threads} --prefix {params.prefix:q}"
        " --wsclean-log {log.wsclean:q}"
        " > {log.main:q} 2>&1"


if SKYMAP["enabled"] and SKYMAP_INTERFEROMETER["enabled"]:
    ALL_TARGETS += [
        results("skymap", "interferometer", "map-image.fits"),
        results("skymap", "interferometer", "map-residual.fits"),
        results("skymap", "interferometer", "map-psf.fits"),
        results("skymap", "interferometer", "validation.tsv"),
        results("skymap", "interferometer", "comparison.tsv"),
        results("skymap", "interferometer", "imaging.png"),
    ]
