# LoTSS configuration (schema defaults filled in by common.smk) and the input functions of
# lotss.smk; the selection rules consume results/lotss/{survey}/cutouts.h5.
import json
import os
import shlex

LOTSS = config["lotss"]
LOTSS_SIM = LOTSS["simulate"]
LOTSS_DL = LOTSS["download"]
LOTSS_SIM_SETTINGS = json.dumps(LOTSS_SIM, sort_keys=True)
LOTSS_SIM_IDS = [f"SIM{i:03d}" for i in range(LOTSS_SIM["n_mosaics"])]
LOTSS_CATALOGUE_EXT = (
    os.path.splitext(LOTSS_DL["catalogue_url"].split("?")[0])[1] or ".fits"
)


def lotss_source(survey):
    """`simulate`, `files` or `download` for a survey wildcard value."""
    return LOTSS["source"] if survey == "main" else "simulate"


def lotss_mosaic_ids(survey):
    """Mosaic IDs of a survey, known from the config (one cutout job each)."""
    source = lotss_source(survey)
    if source == "simulate":
        return LOTSS_SIM_IDS
    if source == "files":
        ids = list(LOTSS["files"]["mosaics"])
        key = "lotss.files.mosaics"
    else:
        ids = list(LOTSS_DL["mosaics"])
        key = "lotss.download.mosaics"
    if not ids:
        raise WorkflowError(f"lotss.source is {source!r} but {key} lists no mosaics")
    return ids


def lotss_mosaic_path(survey, mosaic):
    if lotss_source(survey) == "files":
        return LOTSS["files"]["mosaics"][mosaic]
    return results("lotss", survey, "raw", "mosaics", f"{mosaic}.fits")


def lotss_catalogue_path(survey):
    source = lotss_source(survey)
    if source == "files":
        if not LOTSS["files"]["catalogue"]:
            raise WorkflowError(
                "lotss.source is 'files' but lotss.files.catalogue is not set"
            )
        return LOTSS["files"]["catalogue"]
    if source == "download":
        return results("lotss", survey, "raw", f"catalogue{LOTSS_CATALOGUE_EXT}")
    return results("lotss", survey, "raw", "catalogue.csv")


def lotss_download_args(name):
    """CLI options checking one downloaded file (lotss.download.checksums[name])."""
    checks = LOTSS_DL["checksums"].get(name, {})
    args = [
        f"--{key} {shlex.quote(str(checks[key]))}"
        for key in sorted(checks)
        if checks[key] is not None  # schema defaults: null = not checked
    ]
    args += [f"--timeout-s {LOTSS_DL['timeout_s']}", f"--retries {LOTSS_DL['retries']}"]
    return " ".join(args)


LOTSS_DOWNLOAD_HINT = (
    "Set lotss.download.mosaic_url / catalogue_url to a reachable mirror, or fetch the files "
    "by hand and use lotss.source: files with lotss.files.mosaics and lotss.files.catalogue."
)


def lotss_sample_args(wildcards):
    """lotss-assign options for the source sample (lotss.sources, lotss.source_list)."""
    args = f"--sources {LOTSS['sources']}"
    if LOTSS["sources"] == "list":
        if not LOTSS["source_list"]:
            raise WorkflowError(
                "lotss.sources is list but lotss.source_list names no file"
            )
        args += f" --source-list {shlex.quote(LOTSS['source_list'])}"
    return args


def lotss_header_fallback_args(wildcards):
    """Beam and frequency for mosaics whose header lacks them (lotss.beam_arcsec, frequency_hz)."""
    args = []
    if LOTSS["beam_arcsec"] is not None:
        args.append(f"--beam-arcsec {LOTSS['beam_arcsec']}")
    if LOTSS["frequency_hz"] is not None:
        args.append(f"--frequency-hz {LOTSS['frequency_hz']}")
    return " ".join(args)
