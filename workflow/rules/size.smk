# Rules: size conditioning of the LoTSS model (beyond the paper; its follow-up, A&A
# 700, A18, 2025).  Only when lotss.preprocess.context is peak_flux+size: the
# largest extent measured on real and generated images against the requested size
# (radiogen.evaluation.size; CLI radiogen evaluate size).


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
    shell:
        "radiogen evaluate size --real {input.real:q} --generated {input.generated:q}"
        " --output-json {output.json:q} --figure {output.figure:q} > {log:q} 2>&1"


if "size" in config["lotss"]["preprocess"]["context"]:
    ALL_TARGETS.append(results("evaluation", "size_conditioning.json"))
