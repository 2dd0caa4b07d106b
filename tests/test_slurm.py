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
    """SIGURG to the running training job (what the rule's sbatch --signal=URG@N makes SLURM
    send to every process of the job step before the time limit): Snakemake's job-step process
    and the shell survive it, the training checkpoints and exits 3, Snakemake's retry resumes
    from the checkpoint, and the final model equals an uninterrupted run's."""
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
        signalled = subprocess.run(["scancel", "--signal=URG", job], capture_output=True, text=True,
                                   timeout=60)
        assert signalled.returncode == 0, signalled.stderr
        proc.wait(timeout=900)
    output = log.read_text()
    assert proc.returncode == 0, output[-6000:]
    # the signalled attempt failed (radiogen checkpoints on SIGURG and exits 3) ...
    assert f"SLURM-job '{job}' failed" in output, output[-6000:]
    # ... after the job step's task (Snakemake's job-step process) ended with an exit status,
    # not killed by the signal, which would have ended the step and its processes at once
    sbatch_log = next((slurm_results / "slurm_logs_train").rglob(f"{job}.log")).read_text()
    assert re.search(r"srun: error: \S+: task 0: Exited with exit code", sbatch_log), sbatch_log[-4000:]
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


# --------------------------------------------------------------------------- srun -n 2

#: Tiny data-parallel training of the two-task tests: no U-Net dropout (drawn per process),
#: everything else (orientation, sigma, noise, context drop) is drawn per sample of the global batch.
TWO_TASK_MODEL = {"base_channels": 8, "norm_groups": 4, "attention_head_channels": 8, "dropout": 0.0}
TWO_TASK_TRAIN = {
    "lr": 3e-4, "ema_decay": 0.9, "channels_last": False, "log_every": 4, "val_sigmas": [0.5],
    "val_max_images": 4,
    "first": {"batch_size": 4, "steps": 32, "val_every": 1000, "checkpoint_every": 4},
}
#: Measured: the round-off differences grow about 6-fold per 20 Adam steps at lr 1e-3 (7e-6 after
#: 20 steps, 4e-5 after 40, 1e-2 after 120), hence a short run at a lower rate.


def _job_state(job: str) -> str:
    query = subprocess.run(["squeue", "--states=all", "--noheader", "--format=%T", "--jobs", job],
                           capture_output=True, text=True, timeout=60)
    return query.stdout.strip()


def _wait_for_job(job: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _job_state(job)
        if state in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}:
            return state
        time.sleep(0.5)
    subprocess.run(["scancel", job], timeout=60)
    pytest.fail(f"SLURM job {job} did not end within {timeout:.0f} s")


@pytest.mark.usefixtures("one_torch_thread")
def test_two_srun_tasks_train_like_one_process_and_resume_after_the_early_signal(tmp_path):
    """`sbatch -n 2` + `srun radiogen train run` (gloo): stopped by SIGURG (what sbatch
    --signal=URG@N sends to every task), resumed by a second job, and ending with the weights of
    one process that trains on the same global batch."""
    import json

    import torch

    from radiogen.model import load_model
    from radiogen.model.data import write_synthetic_training_set
    from radiogen.model.train import train

    if _slurm_node_cpus() < 2:
        _unavailable("the SLURM node has fewer than 2 CPUs: srun -n 2 cannot start")
    data = write_synthetic_training_set(tmp_path / "first.h5", n=24, size=16, dataset="first")
    out = tmp_path / "two" / "model.pt"
    checkpoints = out.parent / "checkpoints"
    log = tmp_path / "two.log"
    command = [sys.executable, "-m", "radiogen.cli", "train", "run", "--data", str(data), "--out", str(out),
               "--settings", json.dumps(TWO_TASK_TRAIN), "--model-settings", json.dumps(TWO_TASK_MODEL),
               "--seed", "3", "--device", "cpu", "--threads", "1"]
    script = tmp_path / "train.sbatch"
    script.write_text("#!/bin/bash\nsrun " + " ".join(f"'{word}'" for word in command) + "\n")
    env = {**_env(), "PYTHONPATH": os.pathsep.join([str(REPO / "lib"), os.environ.get("PYTHONPATH", "")])}
    submit = ["sbatch", "--parsable", "--ntasks=2", "--cpus-per-task=1", "--mem-per-cpu=1500", "--time=15",
              f"--output={log}", "--open-mode=append", str(script)]

    first = subprocess.run(submit, capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    job = first.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(checkpoints.glob("ckpt-*.pt")):
        assert _job_state(job) in {"PENDING", "CONFIGURING", "RUNNING"}, log.read_text()[-4000:]
        time.sleep(0.2)
    signalled = subprocess.run(["scancel", "--signal=URG", job], capture_output=True, text=True, timeout=60)
    assert signalled.returncode == 0, signalled.stderr
    assert _wait_for_job(job, 300) == "FAILED", log.read_text()[-4000:]  # exit status 3: interrupted
    text = log.read_text()
    assert "2 process(es) on cpu" in text, text[-4000:]
    stopped = re.search(r"stopped at step (\d+) of 32", text)
    assert stopped and 0 < int(stopped.group(1)) < 32, text[-4000:]
    assert not out.exists()

    second = subprocess.run(submit, capture_output=True, text=True, env=env, timeout=60)
    assert second.returncode == 0, second.stderr
    # (polled: sbatch --wait polls at growing intervals, up to minutes)
    state = _wait_for_job(second.stdout.strip().split(";")[0], 600)
    text = log.read_text()
    assert state == "COMPLETED", text[-4000:]
    assert f"resumed from step {stopped.group(1)} of 32" in text, text[-4000:]

    reference = tmp_path / "one" / "model.pt"
    train(data_path=data, out_path=reference, train_settings=TWO_TASK_TRAIN, model_settings=TWO_TASK_MODEL,
          seed=3, device="cpu")
    two, meta = load_model(out)
    one, _ = load_model(reference)
    assert meta["step"] == 32 and meta["train_config"]["world_size"] == 2
    for key, value in one.state_dict().items():
        # equal up to the float round-off of averaging gradients over two processes
        torch.testing.assert_close(two.state_dict()[key], value, atol=1e-4, rtol=1e-4, msg=key)


def test_generate_runs_missing_shards_as_one_slurm_job_array_and_gathers_them(tmp_path):
    """`radiogen generate --executor slurm`: a killed local run leaves shard 0; the rerun on SLURM
    submits shards 1 and 2 only, as one job array through submitit, and gathers all three."""
    _slurm_node_cpus()
    sys.path.insert(0, str(REPO / "tests"))
    from kill_at import kill_at
    from tiny_models import save_tiny_model

    import radiogen

    model = save_tiny_model(tmp_path / "first.pt", "first", seed=1)
    out = tmp_path / "set.h5"
    base = [str(BIN / "radiogen"), "generate", "--model", str(model), "-n", "5", "--images-per-shard", "2",
            "--out", str(out), "--steps", "1", "--device", "cpu", "--seed", "3", "--class", "FRII", "Bent"]
    kill_at(base, "generate.shard", 1, tmp_path / "killed.log")
    assert (tmp_path / "set.h5.shards" / "shard-000000.h5").exists() and not out.exists()

    command = base + ["--executor", "slurm", "--slurm-cpus", "1", "--slurm-mem-mb", "1000",
                      "--slurm-time-min", "10"]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=900)
    assert run.returncode == 0, run.stderr[-6000:]
    assert "3 shard(s), 2 to generate (slurm)" in run.stderr, run.stderr[-3000:]
    array = re.search(r"submitted 2 shard\(s\) as SLURM job array (\d+)", run.stderr)
    assert array, run.stderr[-3000:]
    query = subprocess.run(["squeue", "--states=all", "--noheader", "-r", "--format=%i|%T", "--jobs",
                            array.group(1)], capture_output=True, text=True, timeout=60)
    states = dict(line.split("|") for line in query.stdout.split())
    assert states == {f"{array.group(1)}_0": "COMPLETED", f"{array.group(1)}_1": "COMPLETED"}, query.stdout

    whole = radiogen.generate(model, n=5, steps=1, device="cpu", seed=3, classes=["FRII", "Bent"])
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(f["images"][()], whole.images, atol=1e-6)
        np.testing.assert_array_equal(f["index"][()], np.arange(5))
        np.testing.assert_array_equal(f["label"][()], [1, 3, 1, 3, 1])
        assert f.attrs["n_shards"] == 3 and f.attrs["seed"] == 3
    assert not (tmp_path / "set.h5.shards").exists()


def test_generate_reports_a_failed_slurm_task_with_its_log(tmp_path):
    """A task that fails on the node (a GPU asked for, none given) is an error naming the shard,
    the SLURM state and the task's own error message; no output is written."""
    _slurm_node_cpus()
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_models import save_tiny_model

    model = save_tiny_model(tmp_path / "first.pt", "first", seed=1)
    out = tmp_path / "set.fits"
    command = [str(BIN / "radiogen"), "generate", "--model", str(model), "-n", "2", "--out", str(out),
               "--steps", "1", "--device", "cuda", "--executor", "slurm", "--slurm-cpus", "1",
               "--slurm-mem-mb", "1000", "--slurm-time-min", "10"]
    env = {**_env(), "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "1 of 1 SLURM shard task(s) failed" in run.stderr, run.stderr[-3000:]
    assert re.search(r"shard 0 \(job \d+(_0)?, FAILED\)", run.stderr), run.stderr[-3000:]
    assert "no GPU is visible" in run.stderr
    assert not out.exists() and (tmp_path / "set.fits.shards" / "jobs.json").exists()


def test_generate_rerun_waits_for_the_live_tasks_of_a_killed_submission(tmp_path):
    """Ctrl-C (here kill -9) after the submission leaves the array queued in SLURM; the rerun
    submits nothing and waits for those tasks, then gathers their shards."""
    _slurm_node_cpus()
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_models import save_tiny_model

    import radiogen

    model = save_tiny_model(tmp_path / "lotss.pt", "lotss")
    out = tmp_path / "set.fits"
    # begin=now+20: the tasks are surely still pending when the first command is killed
    command = [str(BIN / "radiogen"), "generate", "--model", str(model), "-n", "4", "--images-per-shard", "2",
               "--out", str(out), "--steps", "1", "--device", "cpu", "--seed", "8", "--executor", "slurm",
               "--slurm-cpus", "1", "--slurm-mem-mb", "1000", "--slurm-time-min", "10",
               "--slurm-option", "begin=now+20"]
    log = tmp_path / "first.log"
    with open(log, "w") as handle:
        first = subprocess.Popen(command, cwd=tmp_path, stdout=handle, stderr=subprocess.STDOUT, env=_env())
        deadline = time.monotonic() + 120
        while "submitted 2 shard(s)" not in log.read_text() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.2)
        first.kill()
        first.wait()
    array = re.search(r"submitted 2 shard\(s\) as SLURM job array (\d+)", log.read_text())
    assert array, log.read_text()[-3000:]
    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert f"2 shard(s) still queued or running from an earlier submission ({array.group(1)})" in rerun.stderr
    assert "submitted" not in rerun.stderr
    whole = radiogen.generate(model, n=4, steps=1, device="cpu", seed=8)
    from astropy.io import fits

    with fits.open(out) as hdul:
        assert len(hdul) == 5
        for k in range(4):
            np.testing.assert_allclose(np.squeeze(hdul[k + 1].data),
                                       whole.images[k] * whole.conditions["peak_flux"][k], rtol=1e-5, atol=1e-7)
