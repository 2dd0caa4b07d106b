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

from radiogen.testhooks import ENV as HOOK, blocked_message

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


def _snakemake_command(results: Path, slurm_logs: Path, cpus: int, *extra: str) -> list[str]:
    return [
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
        "--latency-wait",
        "10",
        "--slurm-logdir",
        str(slurm_logs),
        # short jobs: poll soon (MinJobAge on the CI node is far longer)
        "--slurm-init-seconds-before-status-checks",
        "2",
        *extra,
    ]


def _env() -> dict:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("SLURM_JOB_ID", None)
    return env


@pytest.fixture(scope="module")
def slurm_results(tmp_path_factory):
    """Results folder shared by the tests of this module (the data part runs once)."""
    return tmp_path_factory.mktemp("slurm")


def test_lotss_data_part_runs_through_sbatch(slurm_results):
    cpus = _slurm_node_cpus()
    results = slurm_results / "results"
    slurm_logs = slurm_results / "slurm_logs"
    target = results.joinpath(*TARGET)
    env = _env()
    command = _snakemake_command(results, slurm_logs, cpus, "--retries", "0", str(target))
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


#: Training settings of the preemption test: a tiny network, checkpoints often.  The
#: first attempt waits after its step-10 checkpoint (test hook, radiogen.testhooks)
#: until the signal comes, so the signal arrives mid-run on any machine.
PREEMPT_CONFIG = """
model: {base_channels: 8, norm_groups: 4, attention_head_channels: 8}
train:
  log_every: 20
  val_sigmas: [0.5]
  val_max_images: 8
  lotss:
    batch_size: 4
    steps: 40
    val_every: 40
    checkpoint_every: 10
    resources: {gpus: 0, cpus: 1, mem_mb: 3000, runtime: 30}
"""


def _slurm_job_of_rule(rule: str) -> str | None:
    query = subprocess.run(["squeue", "--noheader", "--format=%i|%k|%T"], capture_output=True,
                           text=True, timeout=60)
    for line in query.stdout.split():
        job, comment, state = line.split("|")
        if comment.startswith(f"rule_{rule}") and state == "RUNNING":
            return job
    return None


def test_training_job_signalled_like_a_wall_time_limit_resumes_on_retry(slurm_results):
    """SIGTERM to the running training job (what SLURM sends at the time limit): the
    job checkpoints and fails, Snakemake's retry resumes from the checkpoint, and the
    final model equals an uninterrupted run's."""
    cpus = _slurm_node_cpus()
    results = slurm_results / "results"
    training_set = results.joinpath(*TARGET)
    if not training_set.exists():
        pytest.skip("the data-part test did not produce the training set")
    overlay = slurm_results / "preempt.yaml"
    overlay.write_text(PREEMPT_CONFIG)
    model = results / "models" / "lotss" / "model.pt"
    checkpoints = model.parent / "checkpoints"
    command = _snakemake_command(
        results, slurm_results / "slurm_logs_train", cpus, "--retries", "1",
        "--configfile", "workflow/config/ci-slurm.yaml", str(overlay),
        "--set-resources", "train_lotss:gpu=0", "train_lotss:cpus_per_task=1",
        "train_lotss:mem_mb=3000", "--", str(model),
    )
    log = slurm_results / "snakemake_train.log"
    train_log = results / "logs" / "models" / "train_lotss.log"
    blocked = blocked_message("train.checkpoint", 10)
    env = {**_env(), HOOK: "train.checkpoint:10"}  # sbatch passes the environment on to the job
    with open(log, "w") as handle:
        proc = subprocess.Popen(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 600
        job = None
        while time.monotonic() < deadline and proc.poll() is None:
            job = job or _slurm_job_of_rule("train_lotss")
            if job and train_log.exists() and blocked in train_log.read_text():
                break
            time.sleep(0.2)
        assert job and proc.poll() is None, f"no running training job seen:\n{log.read_text()[-4000:]}"
        assert blocked in train_log.read_text(), train_log.read_text()[-3000:]
        assert checkpoints.joinpath("ckpt-000000010.pt").exists()
        signalled = subprocess.run(["scancel", "--signal=TERM", job], capture_output=True, text=True,
                                   timeout=60)
        assert signalled.returncode == 0, signalled.stderr
        proc.wait(timeout=900)
    output = log.read_text()
    assert proc.returncode == 0, output[-6000:]
    # the signalled attempt failed (radiogen checkpoints on SIGTERM and exits 3) ...
    assert f"SLURM-job '{job}' failed" in output, output[-6000:]
    # ... and the retry resumed mid-run (Snakemake clears the rule log between attempts)
    train_log = train_log.read_text()
    # the signal ended the wait after step 10's checkpoint; the job checkpointed after step 11
    assert "resumed from step 11 of 40" in train_log, train_log[-3000:]

    # the same training without interruption, in this process's environment
    import json

    import torch
    import yaml

    from radiogen.cli import main as cli_main

    settings = yaml.safe_load(PREEMPT_CONFIG)
    train_section = {k: v for k, v in settings["train"].items() if k != "lotss"}
    train_section["lotss"] = {k: v for k, v in settings["train"]["lotss"].items() if k != "resources"}
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    merged = {**{k: v for k, v in config["train"].items() if k not in ("lotss", "first")}, **train_section}
    reference = slurm_results / "reference" / "model.pt"
    assert cli_main([
        "train", "run", "--data", str(training_set), "--out", str(reference), "--settings", json.dumps(merged),
        "--model-settings", json.dumps({**config.get("model", {}), **settings["model"]}),
        "--seed", str(config["seed"]), "--device", "cpu", "--threads", "1",
    ]) == 0
    a = torch.load(model, weights_only=False)
    b = torch.load(reference, weights_only=False)
    assert a["step"] == b["step"] == 40
    for key, value in b["state_dict"].items():
        assert torch.equal(a["state_dict"][key], value), key
