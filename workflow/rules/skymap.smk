# Rules: skymap -- a simulated survey map from the trained LoTSS model
# (radiogen.skymap; CLI radiogen skymap).  The population (source counts or a
# catalogue) is drawn by the sources step; the generated sources of each tile are
# one generation job (a GPU under SLURM); assemble places every source once,
# adds the noise and writes the truth; PyBDSF then searches the whole map.
from radiogen.skymap.geometry import map_size_px, tile_names
from radiogen.skymap.settings import settings_json
from radiogen.sampler.workflow import sampling_settings

SKYMAP = config["skymap"]
SKYMAP_NAME = "radiogen_map"
SKYMAP_TILES = tile_names(map_size_px(SKYMAP["size_deg"]), SKYMAP["tile_px"])
SKYMAP_SETTINGS = settings_json(SKYMAP)


rule skymap_sources:
    input:
        model=results("models", "lotss", "model.pt"),
        catalogue=[SKYMAP["catalogue"]] if SKYMAP["catalogue"] else [],
    output:
        sources=results("skymap", "sources.csv"),
        header=results("skymap", "map_header.txt"),
    log:
        results("logs", "skymap", "sources.log"),
    benchmark:
        results("benchmarks", "skymap", "sources.tsv")
    conda:
        "../../envs/torch.yaml"
    params:
        settings=SKYMAP_SETTINGS,
        seed=config["seed"],
        name=SKYMAP_NAME,
    shell:
        "radiogen skymap sources --model {input.model:q} --settings {params.settings:q}"
        " --seed {params.seed} --name {params.name} --header {output.header:q}"
        " --output {output.sources:q} > {log:q} 2>&1"


rule skymap_tile:
    input:
        model=results("models", "lotss", "model.pt"),
        sources=results("skymap", "sources.csv"),
    output:
        results("skymap", "tiles", "{tile}.h5"),
    log:
        results("logs", "skymap", "tile_{tile}.log"),
    benchmark:
        results("benchmarks", "skymap", "tile_{tile}.tsv")
    wildcard_constraints:
        tile=r"\d+",
    conda:
        "../../envs/torch.yaml"
    threads: SAMPLE["threads"]
    resources:
        gpu=1,
        mem_mb=SAMPLE["mem_mb"],
        runtime=SAMPLE["runtime_min"],
    params:
        settings=SKYMAP_SETTINGS,
        sampling=sampling_settings(SAMPLE),
        context=LOTSS_CONTEXT,
        seed=config["seed"],
        guidance=SAMPLE["lotss"]["guidance"],
    shell:
        "radiogen skymap tile --model {input.model:q} --sources {input.sources:q}"
        " --tile {wildcards.tile} --context {params.context} --settings {params.settings:q} --sampling {params.sampling:q}"
        " --seed {params.seed} --guidance {params.guidance} --threads {threads}"
        " --output {output:q} > {log:q} 2>&1"


rule skymap_assemble:
    input:
        sources=results("skymap", "sources.csv"),
        header=results("skymap", "map_header.txt"),
        tiles=expand(results("skymap", "tiles", "{tile}.h5"), tile=SKYMAP_TILES),
    output:
        map=results("skymap", "map.fits"),
        sky_model=results("skymap", "sky_model.fits"),
        intrinsic_sky=results("skymap", "intrinsic_sky.fits"),
        truth=results("skymap", "truth.csv"),
    log:
        results("logs", "skymap", "assemble.log"),
    benchmark:
        results("benchmarks", "skymap", "assemble.tsv")
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=SKYMAP["mem_mb"],
        runtime=SKYMAP["runtime_min"],
    params:
        settings=SKYMAP_SETTINGS,
        seed=config["seed"],
        name=SKYMAP_NAME,
    shell:
        "radiogen skymap assemble --sources {input.sources:q} --header {input.header:q}"
        " --settings {params.settings:q} --seed {params.seed} --name {params.name}"
        " --map {output.map:q} --sky-model {output.sky_model:q} --truth {output.truth:q}"
        " --intrinsic-sky {output.intrinsic_sky:q} {input.tiles:q} > {log:q} 2>&1"


rule skymap_find:
    input:
        results("skymap", "map.fits"),
    output:
        results("skymap", "recovered.csv"),
    log:
        results("logs", "skymap", "find.log"),
    benchmark:
        results("benchmarks", "skymap", "find.tsv")
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


rule skymap_validate:
    input:
        map=results("skymap", "map.fits"),
        sky_model=results("skymap", "sky_model.fits"),
        truth=results("skymap", "truth.csv"),
        recovered=results("skymap", "recovered.csv"),
        sources=results("skymap", "sources.csv"),
    output:
        table=report(
            results("skymap", "validation.tsv"),
            caption="../report/skymap_validation.rst",
            category="Simulated survey map",
            labels={"table": "recovery summary"},
        ),
        figure=report(
            results("skymap", "validation.png"),
            caption="../report/skymap_validation.rst",
            category="Simulated survey map",
            labels={"figure": "completeness, reliability, flux, offsets, counts"},
        ),
        map_figure=report(
            results("skymap", "map.png"),
            caption="../report/skymap_map.rst",
            category="Simulated survey map",
            labels={"figure": "map with truth and PyBDSF positions"},
        ),
    log:
        results("logs", "skymap", "validate.log"),
    benchmark:
        results("benchmarks", "skymap", "validate.tsv")
    conda:
        "../../envs/plotting.yaml"
    params:
        settings=SKYMAP_SETTINGS,
        name=SKYMAP_NAME,
    shell:
        "radiogen skymap validate --map {input.map:q} --sky-model {input.sky_model:q}"
        " --truth {input.truth:q}"
        " --recovered {input.recovered:q} --sources {input.sources:q}"
        " --settings {params.settings:q} --name {params.name} --table {output.table:q}"
        " --figure {output.figure:q} --map-figure {output.map_figure:q} > {log:q} 2>&1"


if SKYMAP["enabled"]:
    ALL_TARGETS += [
        results("skymap", "validation.tsv"),
        results("skymap", "map.fits"),
        results("skymap", "sky_model.fits"),
    ]
