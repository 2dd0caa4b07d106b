# Rules: the labelled FIRST dataset (Griese et al. 2023) and the ResNet-18
# morphology classifier (paper Sects. 3.2, 5.3). Logic: radiogen.first, radiogen.classifier.
import json

FIRST = config["first"]
CLASSIFIER = config["classifier"]


rule fetch_first:
    output:
        results("first", "raw", "galaxy_data.zip"),
    log:
        results("logs", "first", "fetch_first.log"),
    benchmark:
        results("benchmarks", "first", "fetch_first.tsv")
    # On the critical path (-> train_first, the longest job): before the LoTSS chain.
    priority: 10
    retries: 1
    conda:
        "../../envs/data.yaml"
    params:
        source=FIRST["source"],
        local_path=FIRST["local_path"],
        timeout=FIRST["download_timeout_s"],
    shell:
        "radiogen first fetch --source {params.source:q} --local-path {params.local_path:q}"
        " --timeout {params.timeout} --output {output:q} > {log:q} 2>&1"


rule prepare_first:
    input:
        results("first", "raw", "galaxy_data.zip"),
    output:
        dataset=results("first", "dataset.h5"),
        counts=report(
            results("first", "class_counts.csv"),
            caption="../report/first_class_counts.rst",
            category="FIRST data",
        ),
        examples=report(
            results("first", "examples.png"),
            caption="../report/first_examples.rst",
            category="FIRST data",
        ),
    log:
        results("logs", "first", "prepare_first.log"),
    benchmark:
        results("benchmarks", "first", "prepare_first.tsv")
    # On the critical path (-> train_first, the longest job): before the LoTSS chain.
    priority: 10
    conda:
        "../../envs/data.yaml"
    params:
        settings=json.dumps(
            {k: FIRST[k] for k in ("image_size", "crop_size", "examples_per_class")},
            sort_keys=True,
        ),
        seed=config["seed"],
    shell:
        "radiogen first prepare --zip {input:q} --output {output.dataset:q}"
        " --counts {output.counts:q} --examples {output.examples:q}"
        " --settings {params.settings:q} --seed {params.seed} > {log:q} 2>&1"


rule balance_first:
    input:
        results("first", "dataset.h5"),
    output:
        results("first", "training_set.h5"),
    log:
        results("logs", "first", "balance_first.log"),
    benchmark:
        results("benchmarks", "first", "balance_first.tsv")
    # On the critical path (-> train_first, the longest job): before the LoTSS chain.
    priority: 10
    conda:
        "../../envs/data.yaml"
    params:
        settings=json.dumps(
            {
                k: FIRST[k]
                for k in ("balance", "max_per_class", "validation_fraction")
                # max_per_class only when set: runs without it keep their params.
                if FIRST[k] is not None
            },
            sort_keys=True,
        ),
        seed=config["seed"],
    shell:
        "radiogen first balance --dataset {input:q} --output {output:q}"
        " --settings {params.settings:q} --seed {params.seed} > {log:q} 2>&1"


# GPU job under the slurm profile (resources gpu=1); runs on the CPU locally.
# Checkpoints live outside the declared outputs so a killed job resumes.
rule train_classifier:
    input:
        results("first", "dataset.h5"),
    output:
        model=results("classifier", "classifier.pt"),
        metrics=results("classifier", "metrics.json"),
        confusion=report(
            results("classifier", "confusion_test.png"),
            caption="../report/classifier_confusion.rst",
            category="Classifier",
        ),
        curve=report(
            results("classifier", "training_curve.png"),
            caption="../report/classifier_training_curve.rst",
            category="Classifier",
        ),
    log:
        results("logs", "classifier", "train_classifier.log"),
    benchmark:
        results("benchmarks", "classifier", "train_classifier.tsv")
    # Training jobs are the long poles: start them before the many short jobs.
    priority: 10
    conda:
        "../../envs/torch.yaml"
    threads: CLASSIFIER["threads"]
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
    params:
        settings=json.dumps(
            {k: v for k, v in CLASSIFIER.items() if k != "threads"}, sort_keys=True
        ),
        seed=config["seed"],
        checkpoints=results("classifier", "checkpoints"),
    shell:
        "radiogen classifier train --dataset {input:q} --output {output.model:q}"
        " --metrics {output.metrics:q} --confusion {output.confusion:q} --curve {output.curve:q}"
        " --checkpoint-dir {params.checkpoints:q} --settings {params.settings:q}"
        " --seed {params.seed} --threads {threads} > {log:q} 2>&1"


ALL_TARGETS.extend(
    [
        results("first", "training_set.h5"),
        results("first", "class_counts.csv"),
        results("first", "examples.png"),
        results("classifier", "classifier.pt"),
        results("classifier", "metrics.json"),
        results("classifier", "confusion_test.png"),
        results("classifier", "training_curve.png"),
    ]
)
