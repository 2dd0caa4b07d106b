# Rules: class conditioning, similarity / memorisation, distances with noise floor
# and classical baseline, Frechet distance and summary tables (radiogen.evaluation.
# {classes,similarity,distances,summary}; CLI radiogen evaluate-*).  Every metric is
# its own rule and output, so rerunning one never repeats sampling or PyBDSF.
import json

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
MAIN_OMEGA = float(config["evaluation"].get("first_omega", 0.75))
# Guidance sweep of the FIRST sets (FIRST_GUIDANCE from sample.smk), always with the
# main w; paths use float text (omega0.75), as sample.smk's omega_tag().
FIRST_OMEGAS = sorted(
    {float(w) for w in globals().get("FIRST_GUIDANCE", [])} | {MAIN_OMEGA}
)

# Real and generated image set per dataset; LoTSS also has the classical baseline.
REAL_SET = {"lotss": "lotss_real", "first": "first_real"}
GENERATED_SET = {"lotss": "lotss_generated", "first": f"first_generated_w{MAIN_OMEGA}"}
CLASSICAL_SET = {"lotss": "lotss_classical"}
SCORED_SET_RE = r"first_test|(lotss|first)_[a-z]+(_w[0-9.]+)?"
SCORES = results("evaluation", "classes", "scores", "{name}.h5")
PYBDSF_TABLE = results("evaluation", "pybdsf", "{name}.csv")
DISTANCES = results("evaluation", "distances", "{name}.csv")

# Inputs of the Frechet and summary rules per dataset.
FRECHET_INPUTS = {
    dataset: {
        "real": SCORES.format(name=REAL_SET[dataset]),
        "generated": SCORES.format(name=GENERATED_SET[dataset]),
        **(
            {"classical": SCORES.format(name=CLASSICAL_SET[dataset])}
            if dataset in CLASSICAL_SET
            else {}
        ),
    }
    for dataset in REAL_SET
}
SUMMARY_INPUTS = {
    dataset: {
        "generated": DISTANCES.format(
            name=f"{REAL_SET[dataset]}_vs_{GENERATED_SET[dataset]}"
        ),
        "floor": DISTANCES.format(name=f"{REAL_SET[dataset]}_halves"),
        "frechet": results("evaluation", "frechet", f"{dataset}.json"),
        **(
            {
                "classical": DISTANCES.format(
                    name=f"{REAL_SET[dataset]}_vs_{CLASSICAL_SET[dataset]}"
                )
            }
            if dataset in CLASSICAL_SET
            else {}
        ),
    }
    for dataset in REAL_SET
}


rule classify_set:
    input:
        # The real FIRST test split lives in the full dataset file.
        images=lambda wildcards: (
            results("first", "dataset.h5")
            if wildcards.imageset == "first_test"
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
            "--split-dataset first_split --split-value 2"
            if wildcards.imageset == "first_test"
            else ""
        ),
        seed=config["seed"],
    shell:
        "radiogen evaluate-classify --images {input.images} --classifier {input.classifier}"
        " --output {output} {params.split} --seed {params.seed} --threads {threads}"
        " --settings '{params.settings}' > {log} 2>&1"


rule class_conditioning:
    input:
        real=SCORES.format(name="first_test"),
        generated=[SCORES.format(name=f"first_generated_w{w}") for w in FIRST_OMEGAS],
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
    conda:
        "../../envs/plotting.yaml"
    params:
        omega=MAIN_OMEGA,
    shell:
        "radiogen evaluate-class-conditioning --real {input.real}"
        " --generated {input.generated} --main-omega {params.omega}"
        " --output-table {output.table} --output-html {output.html}"
        " --output-figure {output.figure} > {log} 2>&1"


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
        "radiogen evaluate-similarity --generated {input.generated}"
        " --training {input.training} --label {params.label}"
        " --settings '{params.settings}' --seed {params.seed} --threads {threads}"
        " --output-json {output.json} --output-html {output.html}"
        " --output-figure {output.figure} --output-h5 {output.h5} > {log} 2>&1"


rule distances:
    input:
        real=lambda wildcards: image_set_file(wildcards.real),
        other=lambda wildcards: image_set_file(wildcards.other),
        real_pybdsf=PYBDSF_TABLE.format(name="{real}"),
        other_pybdsf=PYBDSF_TABLE.format(name="{other}"),
    output:
        results("evaluation", "distances", "{real}_vs_{other}.csv"),
    log:
        results("logs", "evaluation", "distances_{real}_vs_{other}.log"),
    wildcard_constraints:
        real=r"lotss_real|first_real",
        other=r"(lotss|first)_[a-z]+(_w[0-9.]+)?",
    conda:
        "../../envs/data.yaml"
    params:
        settings=json.dumps(SUMMARY, sort_keys=True),
        seed=config["seed"],
    shell:
        "radiogen evaluate-distances --real {input.real} --other {input.other}"
        " --real-pybdsf {input.real_pybdsf} --other-pybdsf {input.other_pybdsf}"
        " --settings '{params.settings}' --seed {params.seed} --output {output}"
        " > {log} 2>&1"


rule noise_floor:
    input:
        real=lambda wildcards: image_set_file(wildcards.real),
        real_pybdsf=PYBDSF_TABLE.format(name="{real}"),
    output:
        results("evaluation", "distances", "{real}_halves.csv"),
    log:
        results("logs", "evaluation", "noise_floor_{real}.log"),
    wildcard_constraints:
        real=r"lotss_real|first_real",
    conda:
        "../../envs/data.yaml"
    params:
        settings=json.dumps(SUMMARY, sort_keys=True),
        seed=config["seed"],
    shell:
        "radiogen evaluate-noise-floor --real {input.real}"
        " --real-pybdsf {input.real_pybdsf} --settings '{params.settings}'"
        " --seed {params.seed} --output {output} > {log} 2>&1"


rule frechet:
    input:
        unpack(lambda wildcards: FRECHET_INPUTS[wildcards.dataset]),
    output:
        results("evaluation", "frechet", "{dataset}.json"),
    log:
        results("logs", "evaluation", "frechet_{dataset}.log"),
    wildcard_constraints:
        dataset=r"lotss|first",
    conda:
        "../../envs/data.yaml"
    params:
        classical=lambda wildcards, input: (
            f"--classical {input.classical}" if "classical" in input.keys() else ""
        ),
        seed=config["seed"],
    shell:
        "radiogen evaluate-frechet --real {input.real} --generated {input.generated}"
        " {params.classical} --seed {params.seed} --output {output} > {log} 2>&1"


rule summary:
    input:
        unpack(lambda wildcards: SUMMARY_INPUTS[wildcards.dataset]),
    output:
        csv=report(
            results("evaluation", "summary", "{dataset}.csv"),
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
    wildcard_constraints:
        dataset=r"lotss|first",
    conda:
        "../../envs/data.yaml"
    params:
        classical=lambda wildcards, input: (
            f"--classical {input.classical}" if "classical" in input.keys() else ""
        ),
        title=lambda wildcards: (
            f"{REAL_SET[wildcards.dataset]} vs {GENERATED_SET[wildcards.dataset]}"
        ),
    shell:
        "radiogen evaluate-summary --generated {input.generated}"
        " --noise-floor {input.floor} --frechet {input.frechet} {params.classical}"
        " --title '{params.title}' --output-csv {output.csv}"
        " --output-html {output.html} > {log} 2>&1"


ALL_TARGETS += [results("evaluation", "classes", "accuracy.html")]
ALL_TARGETS += expand(
    results("evaluation", "similarity", "{dataset}_memorisation.html"),
    dataset=["lotss", "first"],
)
ALL_TARGETS += expand(
    results("evaluation", "summary", "{dataset}.html"), dataset=["lotss", "first"]
)
