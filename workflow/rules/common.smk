# Validates the configuration and defines input functions; no rules here.
import os

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results"]

# Targets of the default `all` rule; each rule file appends its final outputs.
ALL_TARGETS = []


def results(*parts):
    """Path under the configured results directory."""
    return os.path.join(RESULTS, *parts)
