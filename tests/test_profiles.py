"""Snakemake profiles: they parse, name real rules, and `snakemake --profile slurm` works
after the one-time `radiogen profile install`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from radiogen.cli.profile import default_profile_home, install_profile, render_profile
from radiogen.errors import ConfigError, InputFileError

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "profiles"
BIN = Path(sys.executable).parent

#: Rules that need a GPU on a cluster and take it from the profile.
GPU_RULES = (
    "train_classifier",
    "sample_lotss_shard",
    "sample_first_shard",
)
#: Diffusion training: GPUs (and the process count) from train.{dataset}.resources only.
CONFIG_RESOURCE_RULES = ("train_lotss", "train_first")


def _profile(name: str) -> dict:
    data = yaml.safe_load((PROFILES / name / "config.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(home)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@lru_cache(maxsize=1)
def workflow_rule_names() -> frozenset[str]:
    result = subprocess.run(
        [str(BIN / "snakemake"), "--list-rules"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return frozenset(line.strip() for line in result.stdout.splitlines() if line.strip())


def test_local_profile():
    local = _profile("local")
    assert local["cores"] == "all"
    assert local["keep-going"] is False
    assert local["rerun-incomplete"] is True and local["printshellcmds"] is True
    assert "executor" not in local  # local execution
    assert "software-deployment-method" not in local  # the venv by default
    assert "software-deployment-method: conda" in (PROFILES / "local" / "config.yaml").read_text()


def test_slurm_profile_options_exist_in_the_plugin():
    slurm = _profile("slurm")
    assert slurm["executor"] == "slurm"
    assert slurm["slurm-status-command"] == "squeue"  # no accounting DB needed
    assert slurm["retries"] >= 1 and slurm["jobs"] >= 1
    text = (PROFILES / "slurm" / "config.yaml").read_text()
    assert re.search(r"^\s+# slurm_account:", text, re.MULTILINE)
    assert re.search(r"^\s+# slurm_partition:", text, re.MULTILINE)
    # every option must be one Snakemake (with the SLURM plugin) understands
    help_text = subprocess.run(
        [str(BIN / "snakemake"), "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    for key in slurm:
        assert f"--{key}" in help_text, f"profiles/slurm: unknown option {key}"


#: Rules whose CPUs (threads), memory and wall time come from the config (sample.threads /
#: mem_mb / runtime_min, pybdsf.mem_mb / runtime_min): the profile must not override them.
CONFIG_DRIVEN_RULES = ("sample_lotss_shard", "sample_first_shard", "pybdsf_shard")


def test_slurm_profile_resources():
    slurm = _profile("slurm")
    defaults = slurm["default-resources"]
    assert defaults["mem_mb"] > 0 and defaults["runtime"] > 0
    per_rule = slurm["set-resources"]
    for rule in GPU_RULES:
        assert rule in per_rule, f"GPU rule {rule} has no resources in profiles/slurm"
        resources = per_rule[rule]
        assert resources.get("gpu") == 1 or resources.get("gres") == "gpu:1"
        assert not ("gpu" in resources and "gres" in resources), "both would request 2 GPUs"
    assert per_rule["train_classifier"]["runtime"] > 0 and per_rule["train_classifier"]["mem_mb"] > 0
    for rule in CONFIG_DRIVEN_RULES:
        overridden = set(per_rule.get(rule, {})) & {"mem_mb", "runtime", "cpus_per_task", "gpu", "gres"} - (
            {"gpu", "gres"} if rule in GPU_RULES else set())
        assert not overridden, f"profiles/slurm overrides the config's {sorted(overridden)} of {rule}"


def test_slurm_profile_leaves_cpus_to_the_rules_threads():
    """cpus_per_task would override `threads`, which the rules pass on (--threads): the job
    would get other CPUs than the program uses (sampling: 4 CPUs for 8 threads in paper.yaml)."""
    slurm = _profile("slurm")
    for scope in [slurm.get("default-resources", {}), *slurm["set-resources"].values()]:
        assert "cpus_per_task" not in scope and "cpus_per_gpu" not in scope, scope


def test_slurm_profile_names_only_existing_rules():
    """A renamed rule would silently lose its cluster resources."""
    unknown = sorted(set(_profile("slurm")["set-resources"]) - workflow_rule_names())
    assert not unknown, f"profiles/slurm set-resources for rules not in the workflow: {unknown}"


def test_gpu_rules_of_the_workflow_are_in_the_profile():
    per_rule = _profile("slurm")["set-resources"]
    rules = workflow_rule_names()
    for rule in rules:
        if rule in CONFIG_RESOURCE_RULES:
            assert rule not in per_rule, f"{rule}: the profile would override train.*.resources"
        elif rule.startswith("train_") or re.fullmatch(r"sample_\w+_shard", rule):
            assert rule in per_rule and (
                "gpu" in per_rule[rule] or "gres" in per_rule[rule]
            ), f"rule {rule} looks like a GPU rule but requests no GPU in profiles/slurm"


@pytest.mark.parametrize("configfile, gpus, processes", [
    ("workflow/config/paper.yaml", 2, 2),  # the paper: LoTSS data-parallel on 2 GPUs
    (None, 0, 1),                          # the CPU demo
])
def test_one_value_drives_sbatch_gpus_and_training_processes(tmp_path, configfile, gpus, processes):
    """train.lotss.resources.gpus is both the job's GPU request and its process count."""
    command = [str(BIN / "snakemake"), "-n", "-p", "--profile", "profiles/slurm",
               *(["--configfile", configfile] if configfile else []),
               "--config", f"results={tmp_path}", "--", str(tmp_path / "models" / "lotss" / "model.pt")]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    block = run.stdout[run.stdout.index("rule train_lotss:"):]
    resources = re.search(r"resources: (.*)", block).group(1).split(", ")
    assert f"gpu={gpus}" in resources, resources
    # all processes on one node, and SLURM's early signal (SIGURG 300 s before the limit)
    assert "nodes=1" in resources and "slurm_extra=--signal=URG@300" in resources, resources
    assert f"--nproc {processes} " in re.search(r"Shell command: (.*)", block).group(1)


# --- radiogen profile install ---------------------------------------------------


def test_render_fills_placeholders_and_keeps_comments():
    template = PROFILES / "slurm" / "config.yaml"
    text = render_profile(
        template.read_text(), account="proj-123", partition="gpu", source=template
    )
    parsed = yaml.safe_load(text)
    assert parsed["default-resources"]["slurm_account"] == "proj-123"
    assert parsed["default-resources"]["slurm_partition"] == "gpu"
    assert "# One-time set-up" in text
    # the rest of the profile is unchanged
    original = yaml.safe_load(template.read_text())
    parsed["default-resources"].pop("slurm_account")
    parsed["default-resources"].pop("slurm_partition")
    assert parsed == original


def test_render_rejects_unsafe_names():
    template = PROFILES / "slurm" / "config.yaml"
    with pytest.raises(ConfigError, match="account"):
        render_profile(template.read_text(), account="a b; rm", partition=None, source=template)


def test_render_needs_a_placeholder(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("executor: slurm\n")
    with pytest.raises(InputFileError, match="placeholder"):
        render_profile(bad.read_text(), account="acc", partition=None, source=bad)


def test_default_destination_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_profile_home() == tmp_path / "xdg" / "snakemake"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_profile_home() == tmp_path / ".config" / "snakemake"


def test_install_refuses_to_overwrite_without_force(tmp_path):
    target = install_profile(account="acc1", partition="p1", dest=tmp_path, source=PROFILES)
    assert target == tmp_path / "slurm" / "config.yaml"
    with pytest.raises(InputFileError, match="--force"):
        install_profile(account="acc2", partition="p2", dest=tmp_path, source=PROFILES)
    assert "acc1" in target.read_text()
    install_profile(account="acc2", partition="p2", dest=tmp_path, source=PROFILES, force=True)
    assert yaml.safe_load(target.read_text())["default-resources"]["slurm_account"] == "acc2"
    assert [p.name for p in target.parent.iterdir()] == ["config.yaml"]  # no temp files left


@pytest.mark.slow
def test_installed_profile_makes_snakemake_profile_slurm_work(tmp_path):
    """The exact user command, from the repository root, with a fresh HOME."""
    home = tmp_path / "home"
    home.mkdir()
    install = subprocess.run(
        [
            str(BIN / "radiogen"),
            "profile",
            "install",
            "--account",
            "acc-ci",
            "--partition",
            "part-ci",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=_env(home),
        timeout=120,
    )
    assert install.returncode == 0, install.stderr
    installed = home / ".config" / "snakemake" / "slurm" / "config.yaml"
    assert installed.is_file()
    assert str(installed) in install.stdout

    results = tmp_path / "r"
    dry = subprocess.run(
        [
            str(BIN / "snakemake"),
            "--profile",
            "slurm",
            "-n",
            # a small part of the DAG (the contract's aggregate cutouts) keeps this quick
            str(results / "lotss" / "main" / "cutouts.h5"),
            "--config",
            f"results={results}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=_env(home),
        timeout=300,
    )
    output = dry.stdout + dry.stderr
    assert dry.returncode == 0, output
    # resources of the jobs carry the installed account and partition
    assert "slurm_account=acc-ci" in output and "slurm_partition=part-ci" in output, output[-3000:]

    # without the installed profile, the same command fails: the step is needed
    missing = subprocess.run(
        [str(BIN / "snakemake"), "--profile", "slurm", "-n"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=_env(tmp_path / "empty-home"),
        timeout=300,
    )
    if (Path("/etc/xdg/snakemake/slurm")).exists():
        pytest.skip("a site-wide slurm profile exists in /etc/xdg/snakemake")
    assert missing.returncode != 0
