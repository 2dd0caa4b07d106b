# Rules: sample -- sharded generation of image sets from the trained models
# (radiogen.sampler; CLI radiogen sample-*).  Each shard is one GPU job (CPU
# locally); shard seeds derive from config["seed"] and the image indices, so
# any shard can be rerun alone.  FIRST sets are one per guidance value w, in
# results/samples/first/guidance{w}/ with w formatted by guidance_tag().
from radiogen.sampler.workflow import (
    first_total,
    guidance_tag,
    shard_names,
    shard_settings,
)

SAMPLE = config["sample"]
LOTSS_SHARDS = shard_names(
    SAMPLE["lotss"]["n_images"], SAMPLE["lotss"]["images_per_shard"]
)
FIRST_SHARDS = shard_names(
    first_total(SAMPLE["first"]), SAMPLE["first"]["images_per_shard"]
)
# Per-rule wildcard constraints (other rule files may use {shard} differently).
SHARD_RE = r"\d+"
GUIDANCE_RE = r"[0-9]+\.[0-9]+"
# Image side each model must produce (checked by the shard jobs before sampling).
MODEL_IMAGE_SIZE = {
    "lotss": config["lotss"]["cutout_size"],
    "first": config["first"]["crop_size"],
}
# What the LoTSS model must be conditioned on (checked by every sampling job).
LOTSS_CONTEXT = config["lotss"]["preprocess"]["context"]
FIRST_MAIN_SAMPLES = results(
    "samples", "first", f"guidance{guidance_tag(FIRST_MAIN_GUIDANCE)}", "samples.h5"
)


rule sample_lotss_shard:
    input:
        **guide_input("lotss"),
        model=results("models", "lotss", "model.pt"),
    output:
        results("samples", "lotss", "shards", "{shard}.h5"),
    log:
        results("logs", "sample", "lotss", "shard_{shard}.log"),
    benchmark:
        results("benchmarks", "sample", "lotss", "shard_{shard}.tsv")
    wildcard_constraints:
        shard=SHARD_RE,
    conda:
        "../../envs/torch.yaml"
    threads: SAMPLE["threads"]
    resources:
        gpu=1,
        mem_mb=SAMPLE["mem_mb"],
        runtime=SAMPLE["runtime_min"],
    params:
        settings=shard_settings(SAMPLE, "lotss"),
        guide=guide_option("lotss"),
        seed=config["seed"],
        guidance=SAMPLE["lotss"]["guidance"],
        size=MODEL_IMAGE_SIZE["lotss"],
        context=LOTSS_CONTEXT,
    shell:
        "radiogen sample shard --model {input.model:q} --shard {wildcards.shard}"
        " --dataset lotss --image-size {params.size} --context {params.context}"
        " --seed {params.seed} --guidance {params.guidance} {params.guide} --threads {threads}"
        " --settings {params.settings:q} --output {output:q} > {log:q} 2>&1"


rule aggregate_samples_lotss:
    input:
        expand(results("samples", "lotss", "shards", "{shard}.h5"), shard=LOTSS_SHARDS),
    output:
        results("samples", "lotss", "samples.h5"),
    log:
        results("logs", "sample", "lotss", "aggregate.log"),
    benchmark:
        results("benchmarks", "sample", "lotss", "aggregate.tsv")
    conda:
        "../../envs/torch.yaml"
    shell:
        "radiogen sample aggregate --output {output:q} {input:q} > {log:q} 2>&1"


rule sample_first_shard:
    input:
        **guide_input("first"),
        model=results("models", "first", "model.pt"),
    output:
        results("samples", "first", "guidance{guidance}", "shards", "{shard}.h5"),
    log:
        results("logs", "sample", "first", "guidance{guidance}", "shard_{shard}.log"),
    benchmark:
        results(
            "benchmarks", "sample", "first", "guidance{guidance}", "shard_{shard}.tsv"
        )
    wildcard_constraints:
        shard=SHARD_RE,
        guidance=GUIDANCE_RE,
    conda:
        "../../envs/torch.yaml"
    threads: SAMPLE["threads"]
    resources:
        gpu=1,
        mem_mb=SAMPLE["mem_mb"],
        runtime=SAMPLE["runtime_min"],
    params:
        settings=shard_settings(SAMPLE, "first"),
        guide=guide_option("first"),
        seed=config["seed"],
        size=MODEL_IMAGE_SIZE["first"],
    shell:
        "radiogen sample shard --model {input.model:q} --shard {wildcards.shard}"
        " --dataset first --image-size {params.size}"
        " --seed {params.seed} --guidance {wildcards.guidance} {params.guide} --threads {threads}"
        " --settings {params.settings:q} --output {output:q} > {log:q} 2>&1"


rule aggregate_samples_first:
    input:
        lambda wildcards: expand(
            results("samples", "first", "guidance{guidance}", "shards", "{shard}.h5"),
            guidance=wildcards.guidance,
            shard=FIRST_SHARDS,
        ),
    output:
        results("samples", "first", "guidance{guidance}", "samples.h5"),
    log:
        results("logs", "sample", "first", "guidance{guidance}", "aggregate.log"),
    benchmark:
        results("benchmarks", "sample", "first", "guidance{guidance}", "aggregate.tsv")
    wildcard_constraints:
        guidance=GUIDANCE_RE,
    conda:
        "../../envs/torch.yaml"
    shell:
        "radiogen sample aggregate --output {output:q} {input:q} > {log:q} 2>&1"


# Generated beside training images, one figure per dataset (paper Figs. 3/11 and 5/18);
# the two rules differ only by dataset: one definition makes both.
_SAMPLE_FIGURES = {
    "lotss": ("LoTSS", results("samples", "lotss", "samples.h5")),
    "first": ("FIRST", FIRST_MAIN_SAMPLES),
}
for _dataset, (_label, _samples) in _SAMPLE_FIGURES.items():

    rule:
        name:
            f"sample_figure_{_dataset}"
        input:
            samples=_samples,
            training=image_set_file(f"{_dataset}_real"),
        output:
            report(
                results("samples", "figures", f"{_dataset}_samples_vs_training.png"),
                caption=f"../report/sample_{_dataset}_grid.rst",
                category="Generated images",
                subcategory=_label,
                labels={"dataset": _label, "figure": "generated vs training"},
            ),
        log:
            results("logs", "sample", f"figure_{_dataset}.log"),
        benchmark:
            results("benchmarks", "sample", f"figure_{_dataset}.tsv")
        conda:
            "../../envs/torch.yaml"
        params:
            n=SAMPLE["figures"]["n_per_panel"],
            seed=config["seed"],
        shell:
            "radiogen sample figure --samples {input.samples:q} --training {input.training:q}"
            " --n {params.n} --seed {params.seed} --output {output:q} > {log:q} 2>&1"


rule sample_trajectory:
    input:
        model=results("models", "{dataset}", "model.pt"),
    output:
        report(
            results("samples", "figures", "{dataset}_trajectory.png"),
            caption="../report/sample_trajectory.rst",
            category="Generated images",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "sampling trajectory"},
        ),
    log:
        results("logs", "sample", "trajectory_{dataset}.log"),
    benchmark:
        results("benchmarks", "sample", "trajectory_{dataset}.tsv")
    wildcard_constraints:
        dataset="lotss|first",
    conda:
        "../../envs/torch.yaml"
    threads: SAMPLE["threads"]
    params:
        settings=lambda wildcards: shard_settings(SAMPLE, wildcards.dataset),
        seed=config["seed"],
        guidance=lambda wildcards: (
            SAMPLE["lotss"]["guidance"]
            if wildcards.dataset == "lotss"
            else FIRST_MAIN_GUIDANCE
        ),
        index=SAMPLE["figures"]["trajectory_index"],
        size=lambda wildcards: MODEL_IMAGE_SIZE[wildcards.dataset],
        context=LOTSS_CONTEXT,
    shell:
        "radiogen sample trajectory --model {input.model:q} --seed {params.seed}"
        " --dataset {wildcards.dataset} --image-size {params.size}"
        " --context {params.context}"
        " --guidance {params.guidance} --index {params.index} --threads {threads}"
        " --settings {params.settings:q} --output {output:q} > {log:q} 2>&1"


rule export_fits:
    input:
        results("samples", "{sampleset}", "samples.h5"),
    output:
        directory(results("samples", "{sampleset}", "fits")),
    log:
        results("logs", "sample", "{sampleset}", "export_fits.log"),
    benchmark:
        results("benchmarks", "sample", "{sampleset}", "export_fits.tsv")
    wildcard_constraints:
        sampleset=f"lotss|first/guidance{GUIDANCE_RE}",
    conda:
        "../../envs/data.yaml"
    params:
        ra=SAMPLE["fits"]["ra_deg"],
        dec=SAMPLE["fits"]["dec_deg"],
        max_images=(
            ""
            if SAMPLE["fits"]["max_images"] is None
            else f"--max-images {SAMPLE['fits']['max_images']}"
        ),
        layout=SAMPLE["fits"]["layout"],
        per_file=SAMPLE["fits"]["images_per_file"],
        axes=(
            "--freq-stokes-axes"
            if SAMPLE["fits"]["freq_stokes_axes"]
            else "--no-freq-stokes-axes"
        ),
    shell:
        "radiogen sample export-fits --samples {input:q} --output-dir {output:q}"
        " --ra {params.ra} --dec {params.dec} {params.max_images}"
        " --layout {params.layout} --images-per-file {params.per_file} {params.axes}"
        " > {log:q} 2>&1"


ALL_TARGETS.extend(
    [
        results("samples", "lotss", "samples.h5"),
        *[
            results("samples", "first", f"guidance{guidance_tag(w)}", "samples.h5")
            for w in FIRST_GUIDANCE
        ],
        results("samples", "figures", "lotss_samples_vs_training.png"),
        results("samples", "figures", "first_samples_vs_training.png"),
        results("samples", "figures", "lotss_trajectory.png"),
        results("samples", "figures", "first_trajectory.png"),
    ]
)
if SAMPLE["fits"]["export"]:
    ALL_TARGETS.extend(
        [
            results("samples", "lotss", "fits"),
            os.path.join(os.path.dirname(FIRST_MAIN_SAMPLES), "fits"),
        ]
    )
