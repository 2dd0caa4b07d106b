# radiogen: diffusion models for radio galaxy images (Vicanek Martinez et al. 2024).
# Rules are thin; the work happens in the `radiogen` library and its CLI.


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        ALL_TARGETS,
