# Rules: selection and preprocessing of the LoTSS cutouts (paper Sect. 3.1).
# The cuts and the Box-Cox context live in radiogen.lotss.selection / .preprocess.
import json

# JSON of lotss.selection / lotss.preprocess (schema defaults filled in by
# common.smk), so that a changed default reruns the step like a changed setting.
LOTSS_STEP_SETTINGS = {
    step: json.dumps(config["lotss"][step], sort_keys=True)
    for step in ("selection", "preprocess")
}


rule select_lotss:
    input:
        results("lotss", "{survey}", "cutouts.h5"),
    output:
        table=report(
            results("lotss", "{survey}", "selection", "selection_table.csv"),
            caption="../report/selection_table.rst",
            category="LoTSS data",
            subcategory="{survey}",
            labels={"survey": "{survey}", "figure": "selection table"},
        ),
        per_image=results("lotss", "{survey}", "selection", "per_image.csv"),
        selected=results("lotss", "{survey}", "selection", "selected.h5"),
        figure=report(
            results("lotss", "{survey}", "selection", "snr_sigma.png"),
            caption="../report/selection_snr.rst",
            category="LoTSS data",
            subcategory="{survey}",
            labels={"survey": "{survey}", "figure": "S/N_sigma distribution"},
        ),
        examples=report(
            results("lotss", "{survey}", "selection", "removed_examples.png"),
            caption="../report/selection_examples.rst",
            category="LoTSS data",
            subcategory="{survey}",
            labels={"survey": "{survey}", "figure": "removed examples"},
        ),
    log:
        results("logs", "lotss", "{survey}", "select.log"),
    benchmark:
        results("benchmarks", "lotss", "{survey}", "select.tsv")
    wildcard_constraints:
        survey="main|classical",
    conda:
        "../../envs/data.yaml"
    threads: config["lotss"]["threads"]
    resources:
        mem_mb=lambda wildcards, threads: 1000 + 800 * threads,
        runtime=60,
    params:
        settings=LOTSS_STEP_SETTINGS["selection"],
        seed=config["seed"],
    shell:
        "radiogen lotss select --cutouts {input:q} --table {output.table:q}"
        " --per-image {output.per_image:q} --selected {output.selected:q}"
        " --figure {output.figure:q} --examples {output.examples:q}"
        " --settings {params.settings:q} --threads {threads} --seed {params.seed}"
        " > {log:q} 2>&1"


if LOTSS["source"] == "published" and not LOTSS["published_dataset"]:
    raise WorkflowError(
        "lotss.source is 'published' but lotss.published_dataset is not set "
        "(the path of LOFAR_Dataset.h5; radiogen model fetch lofar-diffusion-lotss)"
    )


# lotss.source: published -- the authors' training set replaces cutouts, selection
# and preprocessing of the main survey.
if LOTSS["source"] == "published":

    rule published_lotss:
        input:
            LOTSS["published_dataset"],
        output:
            results("lotss", "main", "training_set.h5"),
        log:
            results("logs", "lotss", "main", "published.log"),
        benchmark:
            results("benchmarks", "lotss", "main", "published.tsv")
        conda:
            "../../envs/data.yaml"
        resources:
            mem_mb=2000,
            runtime=60,
        params:
            seed=config["seed"],
            validation=config["lotss"]["preprocess"]["validation_fraction"],
        shell:
            "radiogen lotss published --dataset {input:q} --output {output:q}"
            " --seed {params.seed} --validation-fraction {params.validation} > {log:q} 2>&1"


rule preprocess_lotss:
    input:
        results("lotss", "{survey}", "selection", "selected.h5"),
    output:
        training_set=results("lotss", "{survey}", "training_set.h5"),
        figure=report(
            results("lotss", "{survey}", "selection", "peak_flux_boxcox.png"),
            caption="../report/selection_boxcox.rst",
            category="LoTSS data",
            subcategory="{survey}",
            labels={"survey": "{survey}", "figure": "peak flux / Box-Cox"},
        ),
    log:
        results("logs", "lotss", "{survey}", "preprocess.log"),
    benchmark:
        results("benchmarks", "lotss", "{survey}", "preprocess.tsv")
    wildcard_constraints:
        survey="classical" if LOTSS["source"] == "published" else "main|classical",
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        settings=LOTSS_STEP_SETTINGS["preprocess"],
        seed=config["seed"],
    shell:
        "radiogen lotss preprocess --selected {input:q} --output {output.training_set:q}"
        " --figure {output.figure:q} --settings {params.settings:q} --seed {params.seed}"
        " > {log:q} 2>&1"


ALL_TARGETS.append(results("lotss", "main", "training_set.h5"))
if LOTSS["source"] != "published":
    ALL_TARGETS.extend(
        [
            results("lotss", "main", "selection", "selection_table.csv"),
            results("lotss", "main", "selection", "snr_sigma.png"),
            results("lotss", "main", "selection", "removed_examples.png"),
            results("lotss", "main", "selection", "peak_flux_boxcox.png"),
        ]
    )
