# Rules: class conditioning, similarity / memorisation, size-matched distances with
# their noise floor and the classical baseline, Frechet distance and KID, summary
# tables and the overview (radiogen.evaluation.{classes,similarity,distances,summary,
# overview}; CLI radiogen evaluate-*).  Every metric is its own rule and output, so
# rerunning one never repeats sampling or PyBDSF.  The floor depends on the size of
# the compared sets, so each distances rule reads the real, generated and classical
# sets together and computes comparisons and floor on the same partitions.
import json
import shlex

CLASSES = config["evaluation"]["classes"]
SIMILARITY = config["evaluation"]["similarity"]
SUMMARY = config["evaluation"]["summary"]
# Settings passed to the CLI (threads excluded: changing them must not rerun a job).
SETTINGS_JSON = {
    name: json.dumps(
        {k: v for k, v in config["evaluation"][name].items() if k != "threads"},
        sort_keys=True,
    )
    for name in ("classes", "similarity")
}
# Only the keys each rule uses, so that changing one reruns only what depends on it.
DISTANCE_SETTINGS = json.dumps(
    {k: SUMMARY[k] for k in ("max_pixels", "floor_repeats")}, sort_keys=True
)
FEATURE_SETTINGS = json.dumps(
    {
        k: SUMMARY[k]
        for k in (
            "floor_repeats",
            "kid_subset_size",
            "kid_subsets",
            "frechet_components",
        )
    },
    sort_keys=True,
)

# Real and generated image set per dataset; LoTSS also has the classical baseline.
REAL_SET = {"lotss": "lotss_real", "first": "first_real"}
GENERATED_SET = {
    "lotss": "lotss_generated",
    "first": f"first_generated_guidance{FIRST_MAIN_GUIDANCE}",
}
CLASSICAL_SET = {"lotss": "lotss_classical"}
# Real set of the feature distances (Frechet, KID) and their floor: one the judge never
# trained on, like the generated images. For FIRST that is the archive's valid and test
# splits (first_heldout), not first_real: ~80% of the diffusion training set is the
# judge's own training split, whose in-sample embeddings bias the comparison.
FEATURE_REAL_SET = {"lotss": "lotss_real", "first": "first_heldout"}
# Scored sets taken from the FIRST archive file, with the archive splits they keep
# (first_split: 0 train, 1 valid, 2 test).
FIRST_ARCHIVE_SPLITS = {"first_test": "2", "first_heldout": "1 2"}
SCORED_SET_RE = (
    r"first_test|first_heldout|fits_[a-z0-9_]+|(lotss|first)_[a-z]+(_guidance[0-9.]+)?"
)
SCORES = results("evaluation", "classes", "scores", "{name}.h5")
PYBDSF_TABLE = results("evaluation", "pybdsf", "{name}.csv")
DISTANCES = results("evaluation", "distances", "{dataset}.csv")
FEATURES = results("evaluation", "features", "{dataset}.csv")
SUMMARY_CSV = results("evaluation", "summary", "{dataset}.csv")

# Image sets of each dataset's comparison by role; LoTSS also has the classical one.
COMPARED_SETS = {
    dataset: {
        "real": REAL_SET[dataset],
        "generated": GENERATED_SET[dataset],
        **({"classical": CLASSICAL_SET[dataset]} if dataset in CLASSICAL_SET else {}),
    }
    for dataset in REAL_SET
}
# Inputs of the distance and feature-distance rules per dataset.
DISTANCE_INPUTS = {
    dataset: {
        **{role: image_set_file(name) for role, name in sets.items()},
        **{
            f"{role}_pybdsf": PYBDSF_TABLE.format(name=name)
            for role, name in sets.items()
        },
    }
    for dataset, sets in COMPARED_SETS.items()
}
FEATURE_INPUTS = {
    dataset: {
        role: SCORES.format(name=FEATURE_REAL_SET[dataset] if role == "real" else name)
        for role, name in sets.items()
    }
    for dataset, sets in COMPARED_SETS.items()
}


rule classify_set:
    input:
        # The real FIRST test and held-out splits live in the full dataset file.
        images=lambda wildcards: (
            results("first", "dataset.h5")
            if wildcards.imageset in FIRST_ARCHIVE_SPLITS
            else image_set_file(wildcards.imageset)
        ),
        classifier=results("classifier", "classifier.pt"),
    output:
        SCORES.format(name="{imageset}"),
    log:
        results("logs", "evaluation", "classify_{imageset}.log"),
    benchmark:
        results("benchmarks", "evaluation", "classify_{imageset}.tsv")
    wildcard_constraints:
        imageset=SCORED_SET_RE,
    conda:
        "../../envs/torch.yaml"
    threads: CLASSES["threads"]
    resources:
        mem_mb=4000,
    params:
        settings=SETTINGS_JSON["classes"],
        split=lambda wildcards: (
            f"--split-dataset first_split --split-value {FIRST_ARCHIVE_SPLITS[wildcards.imageset]}"
            if wildcards.imageset in FIRST_ARCHIVE_SPLITS
            else ""
        ),
        seed=config["seed"],
    shell:
        "radiogen evaluate classify --images {input.images:q} --classifier {input.classifier:q}"
        " --output {output:q} {params.split} --seed {params.seed} --threads {threads}"
        " --settings {params.settings:q} > {log:q} 2>&1"


rule class_conditioning:
    input:
        real=SCORES.format(name="first_test"),
        generated=[
            SCORES.format(name=f"first_generated_guidance{w}") for w in FIRST_GUIDANCE
        ],
    output:
        table=report(
            results("evaluation", "classes", "accuracy.csv"),
            caption="../report/classes_accuracy.rst",
            category="Class conditioning",
            labels={"table": "accuracy vs guidance (CSV)"},
        ),
        html=report(
            results("evaluation", "classes", "accuracy.html"),
            caption="../report/classes_accuracy.rst",
            category="Class conditioning",
            labels={"table": "accuracy vs guidance"},
        ),
        figure=report(
            results("evaluation", "classes", "confusion.png"),
            caption="../report/classes_confusion.rst",
            category="Class conditioning",
            labels={"figure": "confusion matrices"},
        ),
    log:
        results("logs", "evaluation", "class_conditioning.log"),
    benchmark:
        results("benchmarks", "evaluation", "class_conditioning.tsv")
    conda:
        "../../envs/plotting.yaml"
    params:
        guidance=FIRST_MAIN_GUIDANCE,
    shell:
        "radiogen evaluate class-conditioning --real {input.real:q}"
        " --generated {input.generated:q} --main-guidance {params.guidance}"
        " --output-table {output.table:q} --output-html {output.html:q}"
        " --output-figure {output.figure:q} > {log:q} 2>&1"


rule similarity:
    input:
        generated=lambda wildcards: image_set_file(GENERATED_SET[wildcards.dataset]),
        training=lambda wildcards: image_set_file(REAL_SET[wildcards.dataset]),
    output:
        json=results("evaluation", "similarity", "{dataset}_memorisation.json"),
        html=report(
            results("evaluation", "similarity", "{dataset}_memorisation.html"),
            caption="../report/similarity_memorisation.rst",
            category="Similarity and memorisation",
            labels={"dataset": "{dataset}", "table": "memorisation number"},
        ),
        figure=report(
            results("evaluation", "similarity", "{dataset}_nearest.png"),
            caption="../report/similarity_nearest.rst",
            category="Similarity and memorisation",
            labels={"dataset": "{dataset}", "figure": "nearest training images"},
        ),
        h5=results("evaluation", "similarity", "{dataset}_nearest.h5"),
    log:
        results("logs", "evaluation", "similarity_{dataset}.log"),
    benchmark:
        results("benchmarks", "evaluation", "similarity_{dataset}.tsv")
    wildcard_constraints:
        dataset=r"lotss|first",
    conda:
        "../../envs/torch.yaml"
    threads: SIMILARITY["threads"]
    resources:
        mem_mb=8000,
    params:
        settings=SETTINGS_JSON["similarity"],
        label=lambda wildcards: GENERATED_SET[wildcards.dataset],
        seed=config["seed"],
    shell:
        "radiogen evaluate similarity --generated {input.generated:q}"
        " --training {input.training:q} --label {params.label}"
        " --settings {params.settings:q} --seed {params.seed} --threads {threads}"
        " --output-json {output.json:q} --output-html {output.html:q}"
        " --output-figure {output.figure:q} --output-h5 {output.h5} > {log:q} 2>&1"


rule distances:
    input:
        unpack(lambda wildcards: DISTANCE_INPUTS[wildcards.dataset]),
    output:
        DISTANCES,
    log:
        results("logs", "evaluation", "distances_{dataset}.log"),
    benchmark:
        results("benchmarks", "evaluation", "distances_{dataset}.tsv")
    wildcard_constraints:
        dataset=r"lotss|first",
    conda:
        "../../envs/data.yaml"
    params:
        classical=lambda wildcards, input: (
            f"--classical {shlex.quote(input.classical)}"
            f" --classical-pybdsf {shlex.quote(input.classical_pybdsf)}"
            if "classical" in input.keys()
            else ""
        ),
        settings=DISTANCE_SETTINGS,
        seed=config["seed"],
    shell:
        "radiogen evaluate distances --real {input.real:q} --generated {input.generated:q}"
        " --real-pybdsf {input.real_pybdsf:q} --generated-pybdsf {input.generated_pybdsf:q}"
        " {params.classical} --settings {params.settings:q} --seed {params.seed}"
        " --output {output:q} > {log:q} 2>&1"


rule feature_distances:
    input:
        unpack(lambda wildcards: FEATURE_INPUTS[wildcards.dataset]),
    output:
        FEATURES,
    log:
        results("logs", "evaluation", "feature_distances_{dataset}.log"),
    benchmark:
        results("benchmarks", "evaluation", "feature_distances_{dataset}.tsv")
    wildcard_constraints:
        dataset=r"lotss|first",
    conda:
        "../../envs/data.yaml"
    params:
        classical=lambda wildcards, input: (
            f"--classical {shlex.quote(input.classical)}"
            if "classical" in input.keys()
            else ""
        ),
        settings=FEATURE_SETTINGS,
        seed=config["seed"],
    shell:
        "radiogen evaluate feature-distances --real {input.real:q}"
        " --generated {input.generated:q} {params.classical}"
        " --settings {params.settings:q} --seed {params.seed} --output {output:q}"
        " > {log:q} 2>&1"


rule summary:
    input:
        distances=DISTANCES,
        features=FEATURES,
    output:
        csv=report(
            SUMMARY_CSV,
            caption="../report/summary_table.rst",
            category="Summary tables",
            labels={"dataset": "{dataset}", "table": "distances (CSV)"},
        ),
        html=report(
            results("evaluation", "summary", "{dataset}.html"),
            caption="../report/summary_table.rst",
            category="Summary tables",
            labels={"dataset": "{dataset}", "table": "distances"},
        ),
    log:
        results("logs", "evaluation", "summary_{dataset}.log"),
    benchmark:
        results("benchmarks", "evaluation", "summary_{dataset}.tsv")
    wildcard_constraints:
        dataset=r"lotss|first",
    conda:
        "../../envs/data.yaml"
    params:
        title=lambda wildcards: (
            f"{REAL_SET[wildcards.dataset]} vs {GENERATED_SET[wildcards.dataset]}"
        ),
    shell:
        "radiogen evaluate summary --distances {input.distances:q}"
        " --features {input.features:q} --title {params.title:q}"
        " --output-csv {output.csv:q} --output-html {output.html:q} > {log:q} 2>&1"


rule overview:
    input:
        accuracy=results("evaluation", "classes", "accuracy.csv"),
        summaries=expand(SUMMARY_CSV, dataset=REAL_SET),
        extra=overview_extra_inputs().values(),
    output:
        csv=report(
            results("evaluation", "overview.csv"),
            caption="../report/overview.rst",
            category="0. Overview",
            labels={"table": "what this run achieved (CSV)"},
        ),
        html=report(
            results("evaluation", "overview.html"),
            caption="../report/overview.rst",
            category="0. Overview",
            labels={"table": "what this run achieved"},
        ),
    log:
        results("logs", "evaluation", "overview.log"),
    benchmark:
        results("benchmarks", "evaluation", "overview.tsv")
    conda:
        "../../envs/data.yaml"
    params:
        summaries=" ".join(
            named_option("--summary", dataset, SUMMARY_CSV.format(dataset=dataset))
            for dataset in REAL_SET
        ),
        guidance=FIRST_MAIN_GUIDANCE,
        extra=" ".join(
            f"{option} {shlex.quote(path)}"
            for option, path in overview_extra_inputs().items()
        ),
    shell:
        "radiogen evaluate overview --accuracy {input.accuracy:q} {params.summaries}"
        " {params.extra}"
        " --main-guidance {params.guidance} --output-csv {output.csv:q}"
        " --output-html {output.html:q} > {log:q} 2>&1"


ALL_TARGETS += [results("evaluation", "classes", "accuracy.html")]
ALL_TARGETS += expand(
    results("evaluation", "similarity", "{dataset}_memorisation.html"),
    dataset=["lotss", "first"],
)
ALL_TARGETS += expand(
    results("evaluation", "summary", "{dataset}.html"), dataset=["lotss", "first"]
)
ALL_TARGETS += [results("evaluation", "overview.html")]
