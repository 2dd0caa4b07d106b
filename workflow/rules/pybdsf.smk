# Rules: PyBDSF per image in shards, image statistics, flux conditioning and their
# figures (see radiogen.evaluation.{pybdsf,stats,flux,plots_pybdsf}).  Each metric
# has its own rule and output, so re-plotting never reruns PyBDSF or sampling.
import json

EVAL = config["evaluation"]
PYBDSF = EVAL["pybdsf"]
PYBDSF_SHARDS = range(PYBDSF["shards_per_set"])
# Only the keys that change PyBDSF's results reach the shard jobs' params, so that
# changing a plot setting or a resource request never reruns PyBDSF.
PYBDSF_FIT_KEYS = [
    "thresh",
    "thresh_isl",
    "thresh_pix",
    "mean_map",
    "rms_map",
    "rms_box",
    "noise_fraction",
    "timeout_s",
    "checkpoint_every",
    "options",
    "beam_arcsec",
]
PYBDSF_FIT_SETTINGS = json.dumps(
    {key: PYBDSF[key] for key in PYBDSF_FIT_KEYS}, sort_keys=True
)
PYBDSF_PLOT_SETTINGS = json.dumps(
    {key: PYBDSF[key] for key in ("n_examples", "bins")}, sort_keys=True
)

# Image sets compared per dataset; the first is the real (reference) set.
EVAL_SETS = {
    "lotss": ["lotss_real", "lotss_generated", "lotss_classical"],
    "first": ["first_real", f"first_generated_guidance{FIRST_MAIN_GUIDANCE}"],
}
IMAGESET_RE = r"(lotss|first)_[a-z]+(_guidance[0-9.]+)?"

# Per evaluated dataset: PyBDSF plot inputs (image set, merged table, shard models per
# set) and image-statistics inputs, with the matching --set arguments of the CLI.
PYBDSF_PLOT_FILES = {
    evalset: {
        name: [
            image_set_file(name),
            results("evaluation", "pybdsf", f"{name}.csv"),
            *expand(
                results("evaluation", "pybdsf", name, "shards", "{shard}_models.h5"),
                shard=PYBDSF_SHARDS,
            ),
        ]
        for name in names
    }
    for evalset, names in EVAL_SETS.items()
}
STATS_FILES = {
    evalset: {
        name: [
            results("evaluation", "stats", f"{name}.csv"),
            results("evaluation", "stats", f"{name}_pixels.json"),
        ]
        for name in names
    }
    for evalset, names in EVAL_SETS.items()
}


rule pybdsf_shard:
    input:
        lambda wildcards: image_set_file(wildcards.imageset),
    output:
        table=results("evaluation", "pybdsf", "{imageset}", "shards", "{shard}.csv"),
        models=results(
            "evaluation", "pybdsf", "{imageset}", "shards", "{shard}_models.h5"
        ),
    log:
        results("logs", "pybdsf", "{imageset}", "shard_{shard}.log"),
    benchmark:
        results("benchmarks", "pybdsf", "{imageset}", "shard_{shard}.tsv")
    wildcard_constraints:
        imageset=IMAGESET_RE,
        shard=r"\d+",
    conda:
        "../../envs/pybdsf.yaml"
    threads: 1
    resources:
        mem_mb=PYBDSF["mem_mb"],
        runtime=PYBDSF["runtime_min"],
    params:
        settings=PYBDSF_FIT_SETTINGS,
        n_shards=PYBDSF["shards_per_set"],
        seed=config["seed"],
    shell:
        "radiogen pybdsf shard --image-set {input:q} --shard {wildcards.shard}"
        " --n-shards {params.n_shards} --output {output.table:q} --models {output.models:q}"
        " --seed {params.seed} --settings {params.settings:q} > {log:q} 2>&1"


rule merge_pybdsf:
    input:
        image_set=lambda wildcards: image_set_file(wildcards.imageset),
        shards=lambda wildcards: expand(
            results("evaluation", "pybdsf", "{imageset}", "shards", "{shard}.csv"),
            imageset=wildcards.imageset,
            shard=PYBDSF_SHARDS,
        ),
    output:
        results("evaluation", "pybdsf", "{imageset}.csv"),
    log:
        results("logs", "pybdsf", "{imageset}_merge.log"),
    benchmark:
        results("benchmarks", "pybdsf", "{imageset}_merge.tsv")
    wildcard_constraints:
        imageset=IMAGESET_RE,
    conda:
        "../../envs/pybdsf.yaml"
    params:
        max_failed=PYBDSF["max_failed_fraction"],
    shell:
        "radiogen pybdsf merge --image-set {input.image_set:q} --shards {input.shards:q}"
        " --max-failed-fraction {params.max_failed} --output {output:q} > {log:q} 2>&1"


rule pybdsf_plots:
    input:
        lambda wildcards: sum(PYBDSF_PLOT_FILES[wildcards.evalset].values(), []),
    output:
        examples=report(
            results("evaluation", "pybdsf", "{evalset}_examples.png"),
            caption="../report/pybdsf_examples.rst",
            category="PyBDSF",
            labels={"dataset": "{evalset}", "figure": "examples"},
        ),
        distributions=report(
            results("evaluation", "pybdsf", "{evalset}_distributions.png"),
            caption="../report/pybdsf_distributions.rst",
            category="PyBDSF",
            labels={"dataset": "{evalset}", "figure": "model flux and A50"},
        ),
        json=results("evaluation", "pybdsf", "{evalset}_distributions.json"),
    log:
        results("logs", "pybdsf", "{evalset}_plots.log"),
    benchmark:
        results("benchmarks", "pybdsf", "{evalset}_plots.tsv")
    wildcard_constraints:
        evalset=r"lotss|first",
    conda:
        "../../envs/plotting.yaml"
    params:
        sets=lambda wildcards: " ".join(
            named_option("--set", name, ",".join(files))
            for name, files in PYBDSF_PLOT_FILES[wildcards.evalset].items()
        ),
        settings=PYBDSF_PLOT_SETTINGS,
    shell:
        "radiogen pybdsf plots {params.sets} --examples {output.examples:q}"
        " --distributions {output.distributions:q} --json {output.json:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"


rule image_stats_set:
    input:
        lambda wildcards: image_set_file(wildcards.imageset),
    output:
        table=results("evaluation", "stats", "{imageset}.csv"),
        pixels=results("evaluation", "stats", "{imageset}_pixels.json"),
    log:
        results("logs", "stats", "{imageset}.log"),
    benchmark:
        results("benchmarks", "stats", "{imageset}.tsv")
    wildcard_constraints:
        imageset=IMAGESET_RE,
    conda:
        "../../envs/data.yaml"
    shell:
        "radiogen stats set --image-set {input:q} --output {output.table:q}"
        " --pixels {output.pixels:q} > {log:q} 2>&1"


rule image_stats:
    input:
        lambda wildcards: sum(STATS_FILES[wildcards.evalset].values(), []),
    output:
        figure=report(
            results("evaluation", "stats", "{evalset}_image_stats.png"),
            caption="../report/stats_image_stats.rst",
            category="Image statistics",
            labels={"dataset": "{evalset}"},
        ),
        json=results("evaluation", "stats", "{evalset}_image_stats.json"),
    log:
        results("logs", "stats", "{evalset}_image_stats.log"),
    benchmark:
        results("benchmarks", "stats", "{evalset}_image_stats.tsv")
    wildcard_constraints:
        evalset=r"lotss|first",
    conda:
        "../../envs/plotting.yaml"
    params:
        sets=lambda wildcards: " ".join(
            named_option("--set", name, ",".join(files))
            for name, files in STATS_FILES[wildcards.evalset].items()
        ),
        settings=json.dumps(EVAL["stats"], sort_keys=True),
    shell:
        "radiogen stats figure {params.sets} --output {output.figure:q} --json {output.json:q}"
        " --title {wildcards.evalset} --settings {params.settings:q} > {log:q} 2>&1"


rule flux_conditioning:
    input:
        **{
            name: results("evaluation", "pybdsf", f"{name}.csv")
            for name in EVAL_SETS["lotss"]
        },
    output:
        json=results("evaluation", "flux_conditioning.json"),
        figure=report(
            results("evaluation", "flux_conditioning.png"),
            caption="../report/flux_conditioning.rst",
            category="Flux conditioning",
        ),
    log:
        results("logs", "flux_conditioning.log"),
    benchmark:
        results("benchmarks", "flux_conditioning.tsv")
    conda:
        "../../envs/plotting.yaml"
    params:
        sets=lambda wildcards, input: " ".join(
            named_option("--set", name, path) for name, path in input.items()
        ),
        reference=EVAL_SETS["lotss"][0],
        settings=json.dumps(EVAL["flux"], sort_keys=True),
        seed=config["seed"],
    shell:
        "radiogen evaluate flux-conditioning {params.sets} --reference {params.reference}"
        " --output {output.json:q} --figure {output.figure:q} --seed {params.seed}"
        " --settings {params.settings:q} > {log:q} 2>&1"


ALL_TARGETS += expand(
    results("evaluation", "pybdsf", "{evalset}_{kind}.png"),
    evalset=EVAL_SETS,
    kind=["examples", "distributions"],
)
ALL_TARGETS += expand(
    results("evaluation", "stats", "{evalset}_image_stats.png"), evalset=EVAL_SETS
)
ALL_TARGETS += [results("evaluation", "flux_conditioning.json")]
