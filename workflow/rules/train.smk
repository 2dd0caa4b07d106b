# Rules: training of the two EDM diffusion models (paper Sect. 4.2) and their
# loss curves. Logic: radiogen.model. Each training job resumes from the newest
# checkpoint in results/models/{dataset}/checkpoints/ (kept across retries and
# walltime kills, not declared); only model.pt is the job's output. A run that
# fine-tunes (train.{dataset}.init_from) has the starting model as an input.
import json

# The two training rules differ only by dataset; one definition makes both
# (named train_lotss and train_first, for --set-resources and reruns by name).
# Their resources come from train.{dataset}.resources (schema defaults filled):
# the same `gpus` value is the SLURM request and the number of processes, which
# `radiogen train run` starts on the job's one node (nodes=1: SLURM may otherwise
# spread the GPUs over nodes). slurm_extra asks SLURM for SIGURG before the
# wall-time limit; SIGURG because Snakemake's job-step process and the rule's
# shell ignore it (SIGUSR1 would end them, and the job step with them) while
# the training checkpoints and exits.
for _dataset, _training_set in TRAINING_SET.items():
    _resources = config["train"][_dataset]["resources"]

    rule:
        name:
            f"train_{_dataset}"
        input:
            **init_from_input(_dataset),
            data=_training_set,
        output:
            model=results("models", _dataset, "model.pt"),
            snapshots=snapshot_files(_dataset),
        log:
            results("logs", "models", f"train_{_dataset}.log"),
        benchmark:
            results("benchmarks", "models", f"train_{_dataset}.tsv")
        # Training jobs are the long poles: start them before the many short jobs.
        priority: 10
        conda:
            "../../envs/torch.yaml"
        threads: _resources["cpus"]
        resources:
            gpu=_resources["gpus"],
            nodes=1,
            mem_mb=_resources["mem_mb"],
            runtime=_resources["runtime"],
            slurm_extra=(
                f"--signal=URG@{config['train']['signal_before_limit_s']}"
                if config["train"]["signal_before_limit_s"]
                else ""
            ),
        params:
            settings=train_settings(_dataset),
            model=json.dumps(config["model"], sort_keys=True),
            seed=config["seed"],
            checkpoints=results("models", _dataset, "checkpoints"),
            nproc=max(1, _resources["gpus"]),
        shell:
            "radiogen train run --data {input.data:q} --out {output.model:q}"
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
    benchmark:
        results("benchmarks", "models", "plot_training_{dataset}.tsv")
    wildcard_constraints:
        dataset="lotss|first",
    conda:
        "../../envs/torch.yaml"
    shell:
        "radiogen train plot --model {input:q} --out {output:q} > {log:q} 2>&1"


ALL_TARGETS.extend(
    [
        results("models", "lotss", "loss_curves.png"),
        results("models", "first", "loss_curves.png"),
    ]
)
