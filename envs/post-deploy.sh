#!/usr/bin/env bash
# Snakemake runs this once inside each freshly created conda env.  It looks for
# <env>.post-deploy.sh next to <env>.yaml: each of those is a link to this one
# file.  It installs radiogen from the checkout as an editable install, so
# library changes need no env rebuild.
# Snakemake runs it from its working directory: start Snakemake from the
# repository root, or point RADIOGEN_ROOT at the checkout.
set -euo pipefail
root="${RADIOGEN_ROOT:-$PWD}"
if ! grep -qs '^name = "radiogen"' "$root/pyproject.toml"; then
    echo "post-deploy: $root is not the radiogen checkout (no pyproject.toml naming" \
        "radiogen); run snakemake from the repository root or set RADIOGEN_ROOT" >&2
    exit 1
fi
python -m pip install --no-deps --no-build-isolation --editable "$root"
