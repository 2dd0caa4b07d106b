"""Shards of ``radiogen generate --executor slurm`` as one SLURM job array, through ``submitit``.

Each array task runs :func:`radiogen.sampler.request.run_shard` for one shard
and writes its shard file; this process waits until every file is there and
the caller gathers them.  The SLURM job ids are recorded in
``<work>/jobs.json``: a rerun (after Ctrl-C, or a failed task) waits for tasks
of the earlier submission that SLURM still has queued or running, and submits
only the shards that have neither a file nor a live task.

Job states come from ``squeue``, not from ``sacct``: clusters without an
accounting database (and the CI's single-node SLURM) have no ``sacct``, and a
task killed by SLURM (time limit, memory) leaves no result for ``submitit``.
A task is failed when its shard file is missing and ``squeue`` shows it in a
final state other than COMPLETED, or no longer lists it.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping

from radiogen.config import section_defaults
from radiogen.errors import ConfigError, RadiogenError

__all__ = ["RESOURCE_DEFAULTS", "check_resources", "run_array", "squeue_states"]

log = logging.getLogger(__name__)

_SAMPLE = section_defaults("sample")
#: Resources of each array task: the sample shard jobs' (``sample.threads``, ``mem_mb``, ``runtime_min``).
RESOURCE_DEFAULTS = {
    "cpus": _SAMPLE["threads"],
    "mem_mb": _SAMPLE["mem_mb"],
    "time_min": _SAMPLE["runtime_min"],
    "gpus": 0,
    "partition": None,
    "max_parallel": None,
    "options": {},
    "poll_s": 10.0,
}
#: squeue states of a task that may still write its shard.
ALIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "STAGE_OUT",
         "SIGNALING", "REQUEUE_HOLD", "REQUEUE_FED"}
#: Seconds a task may be missing from squeue (or COMPLETED) without its shard file before it counts as failed.
GRACE_S = 60.0


def check_resources(resources: Mapping) -> dict:
    """Resources with defaults filled in; unknown keys, bad values or no SLURM here are ConfigErrors."""
    unknown = sorted(set(resources) - set(RESOURCE_DEFAULTS))
    if unknown:
        raise ConfigError(f"slurm resources: unknown key(s) {', '.join(unknown)}")
    out = {**RESOURCE_DEFAULTS, **{k: v for k, v in resources.items() if v is not None}}
    for key in ("cpus", "mem_mb", "time_min"):
        if int(out[key]) < 1:
            raise ConfigError(f"slurm resources: {key} must be >= 1, got {out[key]}")
    if int(out["gpus"]) < 0 or (out["max_parallel"] is not None and int(out["max_parallel"]) < 1):
        raise ConfigError(f"slurm resources: gpus must be >= 0 and max_parallel >= 1, got {out}")
    try:
        import submitit  # noqa: F401
    except ImportError as err:
        raise ConfigError("--executor slurm needs the submitit package (pip install submitit)") from err
    missing = [tool for tool in ("sbatch", "squeue") if shutil.which(tool) is None]
    if missing:
        raise ConfigError(f"--executor slurm: {', '.join(missing)} not found; run it on a SLURM login node")
    return out


def squeue_states(job_ids) -> dict[str, str]:
    """``{array task id: state}`` of the tasks ``squeue`` still lists (``1234_5``: job 1234, task 5)."""
    base = sorted({str(j).split("_")[0] for j in job_ids})
    if not base:
        return {}
    result = subprocess.run(["squeue", "-h", "-r", "--states=all", "-j", ",".join(base), "-o", "%i %T"],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        # squeue refuses ids that have left the queue entirely: ask one by one
        if len(base) > 1:
            states = {}
            for job in base:
                states.update(squeue_states([job]))
            return states
        return {}
    return dict(line.split()[:2] for line in result.stdout.splitlines() if len(line.split()) >= 2)


def _executor(work: Path, resources: Mapping, n_tasks: int):
    import submitit

    executor = submitit.SlurmExecutor(folder=work / "slurm", max_num_timeout=0)
    params = {"job_name": "radiogen-generate", "time": int(resources["time_min"]),
              "cpus_per_task": int(resources["cpus"]), "mem": f"{int(resources['mem_mb'])}M",
              "array_parallelism": int(resources["max_parallel"] or n_tasks), "stderr_to_stdout": False}
    if resources["partition"]:
        params["partition"] = str(resources["partition"])
    if int(resources["gpus"]):
        params["gpus_per_node"] = int(resources["gpus"])
    if resources["options"]:
        params["additional_parameters"] = dict(resources["options"])
    executor.update_parameters(**params)
    return executor


def _log_tail(work: Path, job_id: str) -> str:
    """The last lines of a task's submitit logs (stderr, else stdout)."""
    for suffix in ("err", "out"):
        for path in sorted((work / "slurm").glob(f"{job_id}_*log.{suffix}")):
            lines = path.read_text(errors="replace").splitlines()
            if lines:
                return f"{path}:\n" + "\n".join(lines[-30:])
    return f"(no log in {work / 'slurm'})"


def run_array(fn: Callable, *, model: str, paths: Mapping[int, Path], job: dict, work: Path,
              resources: Mapping, done: Callable[[int, Path], bool] | None = None) -> None:
    """Make the shard files ``paths`` (shard -> file) as SLURM array tasks and wait for all of them.

    Parameters
    ----------
    fn : callable
        ``fn(model, path, shard=s, job=job)`` writes shard ``s`` (run on the node).
    job : dict
        Everything a shard depends on (seed, settings, sampler ...); ``threads``
        is set to the tasks' CPUs.
    work : Path
        The request's work folder: ``jobs.json`` and submitit's ``slurm/`` logs.
    resources : mapping
        Output of :func:`check_resources`.
    done : callable, optional
        ``done(shard, path)``: whether a shard's file is complete (default: it exists).

    Raises
    ------
    RadiogenError
        A task failed (its log's tail in the message); the shards that did
        finish stay, so a rerun submits only the failed ones.
    """
    done = done or (lambda _shard, path: path.exists())
    jobs_file = work / "jobs.json"
    recorded = {int(k): v for k, v in json.loads(jobs_file.read_text()).items()} if jobs_file.exists() else {}
    states = squeue_states(recorded[s] for s in paths if s in recorded)
    waiting = {s: recorded[s] for s in paths if s in recorded and states.get(recorded[s]) in ALIVE}
    if waiting:
        log.info("%d shard(s) still queued or running from an earlier submission (%s): waiting for them",
                 len(waiting), ", ".join(sorted(set(j.split("_")[0] for j in waiting.values()))))
    submit = [s for s in paths if s not in waiting]
    if submit:
        executor = _executor(work, resources, len(submit))
        task_job = {**job, "threads": int(resources["cpus"])}
        jobs = executor.submit_array([functools.partial(fn, model, str(paths[s]), shard=s, job=task_job)
                                      for s in submit])
        for shard, submitted in zip(submit, jobs):
            waiting[shard] = str(submitted.job_id)
        log.info("submitted %d shard(s) as SLURM job array %s (logs in %s)", len(submit),
                 str(jobs[0].job_id).split("_")[0], work / "slurm")
        recorded.update(waiting)
        jobs_file.write_text(json.dumps({str(k): v for k, v in sorted(recorded.items())}, indent=1))
    _wait(waiting, paths=paths, work=work, done=done, poll_s=float(resources["poll_s"]))


def _wait(waiting: dict[int, str], *, paths: Mapping[int, Path], work: Path, done: Callable, poll_s: float) -> None:
    from radiogen.progress import Progress

    total = len(waiting)
    bar = Progress(total, "SLURM shards", logger=log, every_s=60.0)
    gone_since: dict[int, float] = {}
    failed: list[str] = []
    while waiting:
        states = squeue_states(waiting.values())
        now = time.monotonic()
        for shard, job_id in list(waiting.items()):
            if done(shard, paths[shard]):
                del waiting[shard]
                bar.update(1)
                continue
            state = states.get(job_id)
            if state in ALIVE:
                gone_since.pop(shard, None)
                continue
            if state is not None and state != "COMPLETED":
                failed.append(f"shard {shard} (job {job_id}, {state}):\n{_log_tail(work, job_id)}")
                del waiting[shard]
                continue
            # COMPLETED without a file yet (a slow shared file system), or no longer listed
            gone_since.setdefault(shard, now)
            if now - gone_since[shard] > GRACE_S:
                failed.append(f"shard {shard} (job {job_id}, {state or 'no longer in squeue'}, no shard file "
                              f"{paths[shard]}):\n{_log_tail(work, job_id)}")
                del waiting[shard]
        if waiting:
            time.sleep(poll_s)
    bar.close()
    if failed:
        raise RadiogenError(f"{len(failed)} of {total} SLURM shard task(s) failed; rerun the same command to "
                            "submit only the missing shards.\n" + "\n".join(failed))
