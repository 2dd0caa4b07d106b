"""Seeds: one module names every random stream; rules pass only the global seed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from radiogen import seeds


def test_streams_are_distinct_and_reproducible():
    assert len(set(seeds.STREAMS.values())) == len(seeds.STREAMS)
    a = seeds.generator(1, "first.balance").random(4)
    np.testing.assert_array_equal(a, seeds.generator(1, "first.balance").random(4))
    assert not np.allclose(a, seeds.generator(1, "first.split").random(4))
    assert not np.allclose(a, seeds.generator(2, "first.balance").random(4))
    assert seeds.integer(1, "sample.noise", 0) != seeds.integer(1, "sample.noise", 1)
    assert 0 <= seeds.integer(2**40, "train.lotss") < 2**63  # torch.manual_seed takes it
    with pytest.raises(KeyError, match="no random stream named 'sample.nosie'"):
        seeds.generator(1, "sample.nosie")


def test_library_stream_constants_come_from_the_seeds_module():
    from radiogen.classifier.train import TRAIN_SEED_OFFSET
    from radiogen.first.balance import BALANCE_SEED_OFFSET, SPLIT_SEED_OFFSET
    from radiogen.lotss.preprocess import SPLIT_SEED_OFFSET as LOTSS_SPLIT
    from radiogen.sampler.conditioning import CONTEXT_STREAM, SIZE_STREAM
    from radiogen.sampler.generate import NOISE_STREAM
    from radiogen.skymap.assemble import NOISE_STREAM as MAP_NOISE
    from radiogen.skymap.catalogue import CATALOGUE_STREAM
    from radiogen.skymap.stamps import MAP_STREAM

    used = [TRAIN_SEED_OFFSET, BALANCE_SEED_OFFSET, SPLIT_SEED_OFFSET, LOTSS_SPLIT, CONTEXT_STREAM, SIZE_STREAM,
            NOISE_STREAM, MAP_NOISE, CATALOGUE_STREAM, MAP_STREAM]
    assert set(used) <= set(seeds.STREAMS.values())
    assert len(set(used)) == len(used)


def _dry_run_commands(root: Path, *args: str) -> list[str]:
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--cores", "2", *args],
        cwd=root, capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return re.findall(r"^Shell command: (.*)$", run.stdout + run.stderr, flags=re.M)


def test_every_rule_passes_the_global_seed_and_nothing_else(repo_root, tmp_path):
    """--seed in every job of the default DAG is config["seed"]: no offsets in rules."""
    config = yaml.safe_load((repo_root / "config.yaml").read_text())
    commands = _dry_run_commands(repo_root, "--directory", str(repo_root),
                                 "--config", f"results={tmp_path / 'results'}")
    seeded = [c for c in commands if "--seed" in c]
    assert len(seeded) > 20
    for command in seeded:
        assert re.findall(r"--seed (\S+)", command) == [str(config["seed"])], command


def _copy_workflow(repo_root: Path, root: Path, overrides: dict) -> None:
    root.mkdir()
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(repo_root / name, root)
    for folder in ("workflow", "envs", "lib"):
        shutil.copytree(repo_root / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "overrides.yaml").write_text(yaml.safe_dump(overrides))


def _contents(path: Path) -> dict:
    """Every dataset of an HDF5 file (tables as text) and its attributes."""
    out = {}
    with h5py.File(path) as h5:
        out.update({f"attr:{k}": str(v) for k, v in h5.attrs.items()})
        h5.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.mark.slow
def test_same_config_same_outputs(repo_root, tmp_path):
    """Two runs of the simulated LoTSS chain (main and classical survey) give identical files."""
    overrides = {"lotss": {"simulate": {"n_mosaics": 1, "mosaic_size": 600, "sources_per_mosaic": 150}}}
    targets = ["results/lotss/main/training_set.h5", "results/lotss/classical/training_set.h5",
               "results/lotss/main/selection/selection_table.csv"]
    outputs = []
    for run in ("a", "b"):
        root = tmp_path / run
        _copy_workflow(repo_root, root, overrides)
        proc = subprocess.run(
            [sys.executable, "-m", "snakemake", "--cores", "2", *targets,
             "--configfile", "config.yaml", "overrides.yaml"], cwd=root, capture_output=True, text=True,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append(root)
    a, b = outputs
    for target in targets[:2]:
        first, second = _contents(a / target), _contents(b / target)
        assert first.keys() == second.keys()
        for key in first:
            if isinstance(first[key], np.ndarray):
                np.testing.assert_array_equal(first[key], second[key], err_msg=f"{target}:{key}")
            else:
                assert first[key] == second[key], f"{target}:{key}"
    pd.testing.assert_frame_equal(pd.read_csv(a / targets[2]), pd.read_csv(b / targets[2]))
    # the two surveys draw from different streams
    main, classical = _contents(a / targets[0]), _contents(a / targets[1])
    assert main["images"].shape != classical["images"].shape or not np.array_equal(main["images"],
                                                                                   classical["images"])
