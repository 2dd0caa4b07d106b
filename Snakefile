# radiogen: diffusion models for radio galaxy images (Vicanek Martinez et al. 2024).
# Rules are thin; the work happens in the `radiogen` library and its CLI.


include: "workflow/rules/common.smk"
include: "workflow/rules/lotss.smk"
include: "workflow/rules/selection.smk"
include: "workflow/rules/first.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/pybdsf.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/imagesets.smk"
include: "workflow/rules/skymap.smk"
include: "workflow/rules/interferometer.smk"
include: "workflow/rules/interferometer_validate.smk"
include: "workflow/rules/size.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        ALL_TARGETS,
