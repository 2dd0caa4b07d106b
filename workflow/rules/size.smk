# Rules: size conditioning of the LoTSS model (beyond the paper; its follow-up, A&A
# 700, A18, 2025).  Only when lotss.preprocess.context is peak_flux+size: the
# Feret size of every real and generated image (the training set's size measure)
# against the requested size, raw and controlled for peak flux (partial Spearman
# rho, flux-bin shuffle null) (radiogen.evaluation.size; CLI radiogen evaluate size).
import json

# evaluation.size as JSON, so that a changed setting reruns the rule.
SIZE_SETTINGS_JSON = json.dumps(config["evaluation"]["size"], sort_keys=True)


rule size_conditioning:
    input:
        real=image_set_file("lotss_real"),
        generated=image_set_file("lotss_generated"),
    output:
        json=results("evaluation", "size_conditioning.json"),
        figure=report(
            results("evaluation", "size_conditioning.png"),
            caption="../report/size_conditioning.rst",
            category="Size conditioning",
            labels={"figure": "measured vs requested size"},
        ),
    log:
        results("logs", "size_conditioning.log"),
    benchmark:
        results("benchmarks", "size_conditioning.tsv")
    conda:
        "../../envs/plotting.yaml"
    params:
        settings=SIZE_SETTINGS_JSON,
        seed=config["seed"],
    shell:
        "radiogen evaluate size --real {input.real:q} --generated {input.generated:q}"
        " --settings {params.settings:q} --seed {params.seed}"
        " --output-json {output.json:q} --figure {output.figure:q} > {log:q} 2>&1"


if "size" in config["lotss"]["preprocess"]["context"]:
    ALL_TARGETS.append(results("evaluation", "size_conditioning.json"))
