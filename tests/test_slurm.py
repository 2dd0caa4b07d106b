"""The data part of the workflow through `snakemake --profile profiles/slurm` on a real SLURM.

Needs a running SLURM controller with a responding node (CI starts one with
scripts/start-slurm); skips with the reason otherwise.  Every job must go
through sbatch: each leaves an sbatch log named after its SLURM job id, and
SLURM itself reports those ids as COMPLETED jobs of this workflow run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TARGET = ("lotss", "main", "training_set.h5")
#: Rules the LoTSS data part must have run, each as its own SLURM job.
DATA_RULES = {"simulate_survey", "cutouts", "aggregate_cutouts", "select_lotss", "preprocess_lotss"}


def _unavailable(reason: str):
    """Skip, or fail where SLURM was started for the tests (.ci/run sets the variable)."""
    if os.environ.get("RADIOGEN_REQUIRE_SLURM") == "1":
        pytest.fail(f"RADIOGEN_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def _slurm_node_cpus() -> int:
    """CPUs of a responding node, or skip with the reason."""
    missing = [tool for tool in ("sbatch", "squeue", "sinfo", "scontrol") if not shutil.which(tool)]
    if missing:
        _unavailable(f"SLURM client tools not found: {', '.join(missing)} (run scripts/start-slurm)")
    try:
        result = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%t %c"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        _unavailable("sinfo timed out: no SLURM controller answering")
    if result.returncode != 0:
        _unavailable(f"no SLURM controller answering: {result.stderr.strip()}")
    ready = [
        int(cpus)
        for state, cpus in (line.split() for line in result.stdout.splitlines() if line.strip())
        if state in {"idle", "mix", "alloc"}
    ]
    if not ready:
        _unavailable(f"no responding SLURM node (sinfo: {result.stdout.strip() or 'empty'})")
    return max(ready)


def test_lotss_data_part_runs_through_sbatch(tmp_path):
    cpus = _slurm_node_cpus()
    results = tmp_path / "results"
    slurm_logs = tmp_path / "slurm_logs"
    target = results.joinpath(*TARGET)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("SLURM_JOB_ID", None)
    command = [
        str(BIN / "snakemake"),
        "--profile",
        "profiles/slurm",
        "--configfile",
        "workflow/config/ci-slurm.yaml",
        "--config",
        f"results={results}",
        # the CI node is small: cap threads at its CPUs so every job fits
        "--max-threads",
        str(cpus),
        "--jobs",
        "4",
        "--retries",
        "0",
        "--latency-wait",
        "10",
        "--slurm-logdir",
        str(slurm_logs),
        # short jobs: poll soon (MinJobAge on the CI node is far longer)
        "--slurm-init-seconds-before-status-checks",
        "2",
        str(target),
    ]
    start = time.monotonic()
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=1500)
    elapsed = time.monotonic() - start
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"snakemake failed after {elapsed:.0f} s:\n{output[-6000:]}"

    # the output is the real training set
    with h5py.File(target, "r") as f:
        images = f["images"][...]
        assert images.ndim == 3 and images.shape[0] > 0
        assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
        assert f.attrs["dataset"] == "lotss"

    # one sbatch log per job, named <SLURM job id>.log, under rule_<rule>/
    logs = sorted(slurm_logs.rglob("*.log"))
    jobs = {}
    for log in logs:
        rule = next(
            p.name for p in log.relative_to(slurm_logs).parents if p.name.startswith("rule_")
        )
        assert re.fullmatch(r"\d+", log.stem), f"not a SLURM job id log: {log}"
        jobs[log.stem] = rule.removeprefix("rule_")
    ran = set(jobs.values())
    assert DATA_RULES <= ran, f"rules without a SLURM job: {DATA_RULES - ran}; logs: {logs}"
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", output)
    assert submitted, f"snakemake reported no SLURM job ids:\n{output[-4000:]}"
    assert set(submitted) <= set(jobs), "a submitted job left no sbatch log"
    assert len(jobs) >= len(DATA_RULES) + 1  # cutouts fan out over >= 2 mosaics
    assert sum(rule == "cutouts" for rule in jobs.values()) >= 2

    # SLURM itself knows these jobs (kept for MinJobAge after they end) as COMPLETED
    query = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%T", "--jobs", ",".join(jobs)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert query.returncode == 0, query.stderr
    states = dict(line.split("|") for line in query.stdout.split())
    assert set(states) == set(jobs), f"SLURM does not list jobs {set(jobs) - set(states)}"
    assert set(states.values()) == {"COMPLETED"}, states
    print(f"{len(jobs)} SLURM jobs ({', '.join(sorted(ran))}) in {elapsed:.0f} s")
