# Rules: FITS cutouts of other surveys as image sets (config `imagesets`; logic
# radiogen.fits_images, CLI radiogen imageset from-fits).  A labelled set that is
# compared with FIRST is scored by the classifier through evaluate.smk's
# classify_set (image set name fits_<name>, see image_set_file in common.smk).


rule imageset_from_fits:
    input:
        lambda wildcards: IMAGESETS[wildcards.name]["inputs"],
    output:
        results("imagesets", "{name}.h5"),
    log:
        results("logs", "imagesets", "{name}.log"),
    benchmark:
        results("benchmarks", "imagesets", "{name}.tsv")
    wildcard_constraints:
        name="[a-z0-9_]+",
    conda:
        "../../envs/data.yaml"
    params:
        options=lambda wildcards: imageset_options(wildcards.name),
    shell:
        "radiogen imageset from-fits {input:q} --output {output:q} {params.options}"
        " > {log:q} 2>&1"


ALL_TARGETS += [results("imagesets", f"{name}.h5") for name in IMAGESETS]
ALL_TARGETS += [
    results("evaluation", "classes", "scores", f"fits_{name}.h5")
    for name, spec in IMAGESETS.items()
    if spec["dataset"] == "first" and spec["label_pattern"]
]
