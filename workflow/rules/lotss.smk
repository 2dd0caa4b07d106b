# Rules: LoTSS survey -> per-mosaic cutouts -> aggregate (radiogen.simulate,
# radiogen.lotss).  Survey wildcard: `main` follows lotss.source; `classical`
# is always the built-in classical simulation with its own derived seed.


include: "lotss_inputs.smk"


ruleorder: simulate_survey > download_lotss
ruleorder: simulate_survey > download_lotss_catalogue


rule simulate_survey:
    output:
        catalogue=results("lotss", "{survey}", "raw", "catalogue.csv"),
        mosaics=[
            results("lotss", "{survey}", "raw", "mosaics", f"{m}.fits")
            for m in LOTSS_SIM_IDS
        ],
    log:
        results("logs", "lotss", "{survey}", "simulate_survey.log"),
    benchmark:
        results("benchmarks", "lotss", "{survey}", "simulate_survey.tsv")
    wildcard_constraints:
        survey="main|classical" if LOTSS["source"] == "simulate" else "classical",
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=lambda wildcards: 500 + 40 * LOTSS_SIM["mosaic_size"] ** 2 // 1000000,
        runtime=30,
    params:
        out_dir=lambda wildcards: results("lotss", wildcards.survey, "raw"),
        seed=config["seed"],
        settings=LOTSS_SIM_SETTINGS,
    shell:
        "radiogen lotss simulate --out-dir {params.out_dir:q} --seed {params.seed}"
        " --survey {wildcards.survey} --settings {params.settings:q} > {log:q} 2>&1"


rule download_lotss:
    output:
        results("lotss", "{survey}", "raw", "mosaics", "{mosaic}.fits"),
    log:
        results("logs", "lotss", "{survey}", "download", "{mosaic}.log"),
    benchmark:
        results("benchmarks", "lotss", "{survey}", "download", "{mosaic}.tsv")
    wildcard_constraints:
        survey="main",
        mosaic="[^/]+",
    retries: 2
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        url=lambda wildcards: LOTSS_DL["mosaic_url"].format(mosaic=wildcards.mosaic),
        checks=lambda wildcards: lotss_download_args(wildcards.mosaic),
        hint=LOTSS_DOWNLOAD_HINT,
    shell:
        "radiogen lotss download --url {params.url:q} --out {output:q} {params.checks}"
        " --hint {params.hint:q} > {log:q} 2>&1"


rule download_lotss_catalogue:
    output:
        results("lotss", "{survey}", "raw", f"catalogue{LOTSS_CATALOGUE_EXT}"),
    log:
        results("logs", "lotss", "{survey}", "download", "catalogue.log"),
    benchmark:
        results("benchmarks", "lotss", "{survey}", "download", "catalogue.tsv")
    wildcard_constraints:
        survey="main",
    retries: 2
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        url=LOTSS_DL["catalogue_url"],
        checks=lotss_download_args("catalogue"),
        hint=LOTSS_DOWNLOAD_HINT,
    shell:
        "radiogen lotss download --url {params.url:q} --out {output:q} {params.checks}"
        " --hint {params.hint:q} > {log:q} 2>&1"


rule assign_sources:
    input:
        catalogue=lambda wildcards: lotss_catalogue_path(wildcards.survey),
        mosaics=lambda wildcards: [
            lotss_mosaic_path(wildcards.survey, m)
            for m in lotss_mosaic_ids(wildcards.survey)
        ],
        source_list=lambda wildcards: (
            [LOTSS["source_list"]] if LOTSS["sources"] == "list" else []
        ),
    output:
        results("lotss", "{survey}", "sources.h5"),
    log:
        results("logs", "lotss", "{survey}", "assign_sources.log"),
    benchmark:
        results("benchmarks", "lotss", "{survey}", "assign_sources.tsv")
    wildcard_constraints:
        survey="main|classical",
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        mosaics=lambda wildcards: " ".join(
            f"--mosaic {shlex.quote(m)} {shlex.quote(lotss_mosaic_path(wildcards.survey, m))}"
            for m in lotss_mosaic_ids(wildcards.survey)
        ),
        duplicates=LOTSS["duplicate_names"],
        sample=lotss_sample_args,
        size=LOTSS["cutout_size"],
    shell:
        "radiogen lotss assign --catalogue {input.catalogue:q} {params.mosaics}"
        " --duplicates {params.duplicates} {params.sample} --size {params.size}"
        " --out {output:q} > {log:q} 2>&1"


rule cutouts:
    input:
        mosaic=lambda wildcards: lotss_mosaic_path(wildcards.survey, wildcards.mosaic),
        sources=results("lotss", "{survey}", "sources.h5"),
    output:
        results("lotss", "{survey}", "cutouts", "{mosaic}.h5"),
    log:
        results("logs", "lotss", "{survey}", "cutouts", "{mosaic}.log"),
    benchmark:
        results("benchmarks", "lotss", "{survey}", "cutouts", "{mosaic}.tsv")
    wildcard_constraints:
        survey="main|classical",
        mosaic="[^/]+",
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        size=LOTSS["cutout_size"],
        block_rows=LOTSS["block_rows"],
        header_fallbacks=lotss_header_fallback_args,
    shell:
        "radiogen lotss cutouts --mosaic {input.mosaic:q} --mosaic-id {wildcards.mosaic:q}"
        " --sources {input.sources:q} --out {output:q} --size {params.size}"
        " --block-rows {params.block_rows} {params.header_fallbacks} > {log:q} 2>&1"


rule aggregate_cutouts:
    input:
        shards=lambda wildcards: [
            results("lotss", wildcards.survey, "cutouts", f"{m}.h5")
            for m in lotss_mosaic_ids(wildcards.survey)
        ],
        sources=results("lotss", "{survey}", "sources.h5"),
    output:
        results("lotss", "{survey}", "cutouts.h5"),
    log:
        results("logs", "lotss", "{survey}", "aggregate_cutouts.log"),
    benchmark:
        results("benchmarks", "lotss", "{survey}", "aggregate_cutouts.tsv")
    wildcard_constraints:
        survey="main|classical",
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "radiogen lotss aggregate --shards {input.shards:q} --sources {input.sources:q}"
        " --out {output:q} > {log:q} 2>&1"


rule plot_cutouts:
    input:
        results("lotss", "{survey}", "cutouts.h5"),
    output:
        report(
            results("lotss", "{survey}", "cutout_examples.png"),
            caption="../report/lotss_cutouts.rst",
            category="LoTSS data",
            subcategory="{survey}",
            labels={"survey": "{survey}", "figure": "cutout examples"},
        ),
    log:
        results("logs", "lotss", "{survey}", "plot_cutouts.log"),
    benchmark:
        results("benchmarks", "lotss", "{survey}", "plot_cutouts.tsv")
    wildcard_constraints:
        survey="main|classical",
    conda:
        "../../envs/plotting.yaml"
    params:
        seed=config["seed"],
        source=lambda wildcards: lotss_source(wildcards.survey),
        settings=lambda wildcards: (
            LOTSS_SIM_SETTINGS
            if lotss_source(wildcards.survey) == "simulate"
            else "{}"
        ),
    shell:
        "radiogen lotss plot-cutouts --cutouts {input:q} --out {output:q}"
        " --seed {params.seed} > {log:q} 2>&1"


if LOTSS["source"] != "published":
    ALL_TARGETS.extend(
        [
            results("lotss", "main", "cutouts.h5"),
            results("lotss", "main", "cutout_examples.png"),
        ]
    )
