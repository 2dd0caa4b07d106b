# Rules: training of the two EDM diffusion models (paper Sect. 4.2) and their
# loss curves. Logic: radiogen.model. Each training job resumes from the newest
# checkpoint in results/models/{dataset}/checkpoints/ (kept across retries and
# walltime kills, not declared); only model.pt is the job's output.
import json

# Job resources when the config gives none (the paper's; a SLURM profile's
# set-resources take precedence): GPUs of one node, cores, MB, minutes.
_TRAIN_DEFAULT_RESOURCES = {
    "lotss": {"gpus": 2, "cpus": 16, "mem_mb": 64000, "runtime": 1440},
    "first": {"gpus": 1, "cpus": 8, "mem_mb": 32000, "runtime": 720},
}
_TRAIN_SECTION = config.get("train", {})
_TRAIN_RESOURCES = {
    dataset: {
        **defaults,
        **((_TRAIN_SECTION.get(dataset) or {}).get("resources") or {}),
    }
    for dataset, defaults in _TRAIN_DEFAULT_RESOURCES.items()
}
# JSON of the train section for one model: shared keys + that model's sub-block.
_TRAIN_SETTINGS = {
    dataset: json.dumps(
        {
            **{k: v for k, v in _TRAIN_SECTION.items() if k not in ("lotss", "first")},
            dataset: {
                k: v
                for k, v in (_TRAIN_SECTION.get(dataset) or {}).items()
                if k != "resources"
            },
        },
        sort_keys=True,
    )
    for dataset in ("lotss", "first")
}
_MODEL_SETTINGS = json.dumps(config.get("model", {}), sort_keys=True)


rule train_lotss:
    input:
        results("lotss", "main", "training_set.h5"),
    output:
        results("models", "lotss", "model.pt"),
    log:
        results("logs", "models", "train_lotss.log"),
    benchmark:
        results("benchmarks", "models", "train_lotss.tsv")
    # Training jobs are the long poles: start them before the many short jobs.
    priority: 10
    conda:
        "../../envs/torch.yaml"
    threads: _TRAIN_RESOURCES["lotss"]["cpus"]
    resources:
        gpu=_TRAIN_RESOURCES["lotss"]["gpus"],
        mem_mb=_TRAIN_RESOURCES["lotss"]["mem_mb"],
        runtime=_TRAIN_RESOURCES["lotss"]["runtime"],
    params:
        settings=_TRAIN_SETTINGS["lotss"],
        model=_MODEL_SETTINGS,
        seed=config["seed"],
        checkpoints=results("models", "lotss", "checkpoints"),
        nproc=max(1, _TRAIN_RESOURCES["lotss"]["gpus"]),
    shell:
        "radiogen train --data {input:q} --out {output:q}"
        " --settings {params.settings:q} --model-settings {params.model:q}"
        " --seed {params.seed} --checkpoint-dir {params.checkpoints:q}"
        " --nproc {params.nproc} --threads {threads} >> {log:q} 2>&1"


rule train_first:
    input:
        results("first", "training_set.h5"),
    output:
        results("models", "first", "model.pt"),
    log:
        results("logs", "models", "train_first.log"),
    benchmark:
        results("benchmarks", "models", "train_first.tsv")
    # Training jobs are the long poles: start them before the many short jobs.
    priority: 10
    conda:
        "../../envs/torch.yaml"
    threads: _TRAIN_RESOURCES["first"]["cpus"]
    resources:
        gpu=_TRAIN_RESOURCES["first"]["gpus"],
        mem_mb=_TRAIN_RESOURCES["first"]["mem_mb"],
        runtime=_TRAIN_RESOURCES["first"]["runtime"],
    params:
        settings=_TRAIN_SETTINGS["first"],
        model=_MODEL_SETTINGS,
        seed=config["seed"],
        checkpoints=results("models", "first", "checkpoints"),
        nproc=max(1, _TRAIN_RESOURCES["first"]["gpus"]),
    shell:
        "radiogen train --data {input:q} --out {output:q}"
        " --settings {params.settings:q} --model-settings {params.model:q}"
        " --seed {params.seed} --checkpoint-dir {params.checkpoints:q}"
        " --nproc {params.nproc} --threads {threads} >> {log:q} 2>&1"


rule plot_training:
    input:
        results("models", "{dataset}", "model.pt"),
    output:
        report(
            results("models", "{dataset}", "loss_curves.png"),
            caption="../report/train_loss_curves.rst",
            category="Diffusion models",
            subcategory="{dataset}",
            labels={"model": "{dataset}", "figure": "loss curves"},
        ),
    log:
        results("logs", "models", "plot_training_{dataset}.log"),
    wildcard_constraints:
        dataset="lotss|first",
    conda:
        "../../envs/torch.yaml"
    shell:
        "radiogen train-plot --model {input:q} --out {output:q} > {log:q} 2>&1"


ALL_TARGETS.extend(
    [
        results("models", "lotss", "loss_curves.png"),
        results("models", "first", "loss_curves.png"),
    ]
)
