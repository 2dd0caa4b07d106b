"""benchmarks/gpu_check: its CPU smoke mode end to end, its time box, its summary."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check"
CLASSES = ("FRI", "FRII", "Compact", "Bent")


def _module():
    """benchmarks/gpu_check.py as a module (benchmarks/ is not a package)."""
    if "gpu_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules["gpu_check"]


def _png(label: int, rng: np.random.Generator) -> bytes:
    """A 300x300 greyscale source whose shape depends on the class."""
    from PIL import Image

    yy, xx = np.mgrid[0:300, 0:300].astype(np.float32) - 150.0
    offsets = {0: [(0, 0)], 1: [(-20, 0), (20, 0)], 2: [(0, 0)], 3: [(-15, 10), (15, 10), (0, -5)]}[label]
    width = 3.0 if label == 2 else 8.0
    img = sum(np.exp(-((xx - dx) ** 2 + (yy - dy) ** 2) / (2 * width**2)) for dx, dy in offsets)
    img = img + rng.normal(0, 0.03, img.shape)
    img = (255 * (img - img.min()) / (img.max() - img.min())).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="PNG")
    return buffer.getvalue()


def _first_zip(path: Path, per_folder: int = 3) -> Path:
    """A small archive in the Griese et al. (2023) layout: split/class/RA_DEC_LABEL_CATALOGUE.png."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as archive:
        for s, split in enumerate(("train", "valid", "test")):
            for label, name in enumerate(CLASSES):
                for i in range(per_folder):
                    ra, dec = 10.0 + s + 0.1 * i, label + 0.01 * i
                    archive.writestr(f"galaxy_data/{split}/{name}/{ra:.4f}_{dec:.4f}_{label}_Synth{s}{i}.png",
                                     _png(label, rng))
    return path


def _run(out: Path, *args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([str(SCRIPT), str(out), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.mark.slow
def test_smoke_run_on_cpu_writes_every_figure(tmp_path):
    zip_path = _first_zip(tmp_path / "galaxy_data.zip")
    out = tmp_path / "out"
    proc = _run(out, "--device", "cpu", "--smoke", "--first-zip", str(zip_path), "--budget-s", "300",
                "--threads", "1", "--work-dir", str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert {"meta", "ceilings", "train", "sample", "first", "summary"} <= set(results)
    assert {p: results[p]["status"] for p in ("ceilings", "train", "sample", "first")} == dict.fromkeys(
        ("ceilings", "train", "sample", "first"), "ok")

    ceilings = results["ceilings"]
    assert ceilings["matmul_bf16"]["tflops"] > 0 and ceilings["copy"]["gbps"] > 0
    assert ceilings["paper_forward"]["gflop_per_image"] > 0

    variants = {v["name"]: v for v in results["train"]["variants"]}
    for name in ("NHWC eager", "NCHW eager"):
        v = variants[name]
        assert v["status"] == "ok" and v["images_per_s"] > 0 and v["steps_done"] == 4, v
        assert len(v["images_per_s_intervals"]) == 4 and v["history_from"] == "done"
    assert variants["NHWC compile"]["status"] == "skipped" and "CPU" in variants["NHWC compile"]["reason"]
    assert results["train"]["world_size"] == 1

    batches = results["sample"]["batches"]
    assert [b["batch"] for b in batches] == [2, 4] and all(b["images_per_s"] > 0 for b in batches)
    assert results["sample"]["best"]["images_per_s"] > 0

    first = results["first"]
    assert first["dataset"]["images"] == 36 and first["dataset"]["training_set"] == 36
    clf, gen, diff = first["classifier"], first["generated"], first["diffusion"]
    assert clf["epochs"] == 1 and clf["n_test"] == 12
    # accuracies are counts of the 12 test images: the mean of the per-class recalls
    p = clf["test_accuracy"]
    per_class = clf["test_per_class"]
    assert sum(c["n"] for c in per_class.values()) == 12
    assert p == pytest.approx(sum(c["n"] * c["accuracy"] for c in per_class.values()) / 12)
    assert p * 12 == pytest.approx(round(p * 12))
    assert clf["test_accuracy_err"] == pytest.approx((p * (1 - p) / 12) ** 0.5)
    assert diff["steps"] >= 1 and (out / "first_loss.png").exists()
    assert gen["n_images"] == 8
    assert set(gen["per_class"]) == set(CLASSES) and all(c["n"] == 2 for c in gen["per_class"].values())
    # the generated accuracy is the count of 8 judged right, the mean of the classes' 2 each
    assert gen["accuracy"] == pytest.approx(sum(c["accuracy"] for c in gen["per_class"].values()) / 4)
    assert gen["accuracy"] * 8 == pytest.approx(round(gen["accuracy"] * 8))
    assert (out / "first_samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = results["summary"]
    assert summary["targets"]["train_images_per_s_per_gpu"]["target"] == 1500
    assert summary["targets"]["sample_images_per_s"]["target"] == 40
    assert "gpu_check summary" in proc.stdout and "targets (one H100-class GPU)" in proc.stdout
    assert (out / "gpu_check.log").stat().st_size > 0
    # OUT_DIR stays within what a device run brings back (8 files): work files live elsewhere.
    assert len([p for p in out.rglob("*") if p.is_file()]) <= 8
    assert (tmp_path / "work" / "first" / "model.pt").exists()


def test_missing_first_zip_fails_that_part_clearly(tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "nowhere" / "galaxy_data.zip"
    proc = _run(out, "--device", "cpu", "--smoke", "--parts", "first", "--first-zip", str(missing),
                "--budget-s", "60", timeout=300)
    assert proc.returncode == 1
    results = json.loads((out / "results.json").read_text())
    assert results["first"]["status"] == "error"
    assert "--first-zip" in results["first"]["error"] and str(missing) in results["first"]["error"]
    assert "FIRST zip missing" in proc.stdout


def test_step_probe_stops_train_at_its_deadline_and_the_run_finishes(tmp_path):
    """The FIRST part's time box: deadline stop through train()'s signal, then a zero-step finishing run."""
    from radiogen.model.data import write_synthetic_training_set
    from radiogen.model.train import train

    gc = _module()
    data = write_synthetic_training_set(tmp_path / "toy.h5", n=24, size=16, dataset="first")
    settings = {"log_every": 1, "val_sigmas": [0.1], "val_max_images": 4, "channels_last": False,
                "first": {"batch_size": 4, "steps": 1000, "val_every": 1000, "checkpoint_every": 1000}}
    kw = dict(data_path=data, out_path=tmp_path / "model.pt", model_settings=gc.TINY_MODEL, seed=0, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        probe = gc.StepProbe(deadline=time.time() - 1.0, report_dir=str(tmp_path), every=10)
        assert train(train_settings=settings, on_step=probe, **kw) == {"status": "interrupted", "step": 1}
        (report,) = gc.read_probes(tmp_path)
        assert report["step"] == 1 and report["stopped_by_deadline"] and report["rank"] == 0
        history, step, state = gc.run_history(tmp_path / "model.pt", tmp_path / "checkpoints")
        assert (step, state, history["train_step"]) == (1, "interrupted", [1])
        # what train() resolved "auto" to, from the checkpoint: not a guess from the device
        assert gc.precision_used(tmp_path / "model.pt", tmp_path / "checkpoints") == "fp32"
        final = {**settings, "first": {**settings["first"], "steps": 1}}
        assert train(train_settings=final, **kw) == {"status": "done", "step": 1}
    finally:
        torch.set_num_threads(threads)
    history, step, state = gc.run_history(tmp_path / "model.pt", tmp_path / "checkpoints")
    assert (step, state) == (1, "done") and history["val_step"] == [0, 1]
    assert gc.precision_used(tmp_path / "model.pt", tmp_path / "checkpoints") == "fp32"  # from the model file
    assert gc.precision_used(tmp_path / "none.pt", tmp_path / "no-checkpoints") is None


def test_step_probe_without_a_handler_does_not_kill_the_process(tmp_path):
    gc = _module()
    probe = gc.StepProbe(deadline=0.0, report_dir=str(tmp_path), every=1)
    probe(1)  # no train() handler installed: SIGUSR1's default action would end pytest
    assert probe.fired and gc.read_probes(tmp_path)[0]["stopped_by_deadline"]


def test_summary_utilisation_targets_and_table():
    gc = _module()
    results = {
        "meta": {"device": "cuda", "torch": "2.x", "budget_s": 480, "elapsed_s": 470},
        "ceilings": {"status": "ok", "device": {"device": "cuda", "name": "GPU"}, "matmul_bf16": {"tflops": 800.0},
                     "copy": {"gbps": 4000.0}, "paper_forward": {"gflop_per_image": 80.0}},
        "train": {"status": "ok", "batch": 256, "world_size": 2, "precision": "auto", "backend": "nccl",
                  "variants": [{"name": "NHWC eager", "status": "ok", "images_per_s": 3200.0},
                               {"name": "NHWC compile", "status": "skipped", "reason": "--skip-compile"}],
                  "best": {"name": "NHWC eager", "images_per_s": 3200.0}},
        "sample": {"status": "ok", "num_steps": 25, "guidance": 0.75, "image_forwards_per_image": 98,
                   "batches": [{"batch": 256, "status": "ok", "images_per_s": 30.0, "seconds": 8.5}], "extras": [],
                   "best": {"batch": 256, "images_per_s": 30.0}},
        "first": {"status": "ok", "classifier": {"test_accuracy": 0.9, "test_accuracy_err": 0.02, "n_test": 200},
                  "generated": {"accuracy": 0.8, "accuracy_err": 0.02, "n_per_class": 100, "guidance": 0.75,
                                "per_class": {"FRI": {"accuracy": 0.7}}},
                  "diffusion": {"steps": 3000, "batch": 128, "model_settings": {"base_channels": 64}}},
    }
    summary = gc.summarise(results)
    assert results["train"]["variants"][0]["utilisation"] == pytest.approx(3200 * 3 * 80 / 1e3 / 800)
    assert results["sample"]["batches"][0]["utilisation"] == pytest.approx(30 * 98 * 80 / 1e3 / 800)
    assert summary["sample_compute_limit_images_per_s"] == pytest.approx(800e3 / (98 * 80))
    assert summary["targets"]["train_images_per_s_per_gpu"] == {"target": 1500.0, "measured": 1600.0, "met": True}
    assert summary["targets"]["sample_images_per_s"]["met"] is False
    results["summary"] = summary
    table = gc.format_table(results)
    assert "0.800 ± 0.020" in table and "0.900 ± 0.020" in table and "not met" in table
    assert gc.binomial_error(0.5, 100) == pytest.approx(0.05)


def test_step_probe_runs_on_to_min_steps_within_its_overtime(tmp_path, monkeypatch):
    gc = _module()
    raised = []
    monkeypatch.setattr(gc.signal, "getsignal", lambda signum: (lambda *args: None))
    monkeypatch.setattr(gc.signal, "raise_signal", raised.append)
    probe = gc.StepProbe(deadline=time.time() - 1.0, report_dir=str(tmp_path / "a"), every=100, min_steps=3,
                         overtime_s=600.0)
    for step in (1, 2):
        probe(step)
    assert raised == []  # past the deadline, but short of a timed interval
    probe(3)
    assert raised == [gc.signal.SIGUSR1]
    late = gc.StepProbe(deadline=time.time() - 10.0, report_dir=str(tmp_path / "b"), every=100, min_steps=100,
                        overtime_s=5.0)
    late(1)  # the overtime is spent too: stop now
    assert raised == [gc.signal.SIGUSR1] * 2


def test_run_child_kills_a_hung_process_at_its_deadline():
    gc = _module()
    t0 = time.time()
    rc, timed_out, tail = gc.run_child(
        [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(300)"],
        name="hang", hard_deadline=time.time() + 3.0)
    assert timed_out and rc != 0
    assert time.time() - t0 < 30 and tail == ["started"]


def test_budgets_fit_nine_minutes_with_the_compile_slot_first():
    gc = _module()
    assert gc.parse_args(["out"]).budget_s == gc.DEFAULT_BUDGET_S == sum(gc.PART_BUDGET_S.values())
    assert set(gc.PART_BUDGET_S) == set(gc.PARTS)
    # the whole command, with the last part killed at its hard limit, ends within 9 minutes
    assert gc.DEFAULT_BUDGET_S + gc.OVERRUN_S <= gc.COMMAND_LIMIT_S == 9 * 60
    assert gc.OVERRUN_S >= gc.PART_GRACE_S + 10.0  # run_child: SIGTERM, 10 s, SIGKILL
    slots = gc.TRAIN_SLOTS
    assert sum(v.slot_s for v in slots) <= gc.PART_BUDGET_S["train"]
    assert all(v.min_s <= v.slot_s for v in slots)
    # NHWC + compile first, with the largest slot and room for a 2-minute compile; no NCHW compile
    assert slots[0].compile and slots[0].channels_last and slots[0].slot_s >= 120.0
    assert slots[0].slot_s == max(v.slot_s for v in slots)
    assert [v.name for v in slots if v.compile] == ["NHWC compile"]
    assert {(v.channels_last, v.compile) for v in slots[1:]} == {(True, False), (False, False)}
    plan = gc.train_variants(cuda=True, skip_compile=False)
    assert [c.name for c, _ in plan] == [v.name for v in slots] and all(r is None for _, r in plan)
    assert gc.train_variants(cuda=False, skip_compile=False)[0][1] is not None  # skipped on CPU, with a reason


def test_compile_time_apart_from_steady_rate_and_the_settings_chosen():
    gc = _module()
    variants = [
        {"name": "NHWC compile", "status": "ok", "images_per_s": 2100.0, "time_to_first_step_s": 97.0},
        {"name": "NHWC eager", "status": "ok", "images_per_s": 1700.0, "time_to_first_step_s": 12.0},
        {"name": "NCHW eager", "status": "error", "error": "variant process exited with status -9"},
    ]
    gc._compile_time(variants)
    assert variants[0]["compile_s"] == pytest.approx(85.0) and variants[0]["images_per_s"] == 2100.0
    results = {"meta": {"device": "cuda"}, "train": {"variants": variants},
               "sample": {"best": {"batch": 512, "images_per_s": 50.0}}}
    # a failed row chooses nothing: channels_last needs both eager rates
    assert gc.recommended_settings(results) == {"train.compile": True, "sample.cuda_batch_size": 512}
    variants[2].update(status="ok", images_per_s=1800.0)
    del variants[2]["error"]
    assert gc.recommended_settings(results)["train.channels_last"] is False
    assert gc.recommended_settings({**results, "meta": {"device": "cpu"}}) == {}
    results["summary"] = gc.summarise(results)
    table = gc.format_table(results)
    assert "train.channels_last: false" in table and "sample.cuda_batch_size: 512" in table
    assert "85.0" in table  # the compile column


@pytest.mark.slow
def test_a_failing_variant_is_a_row_with_its_error_and_every_figure_is_written(tmp_path):
    """A training variant whose process dies (as on a CUDA crash): its row carries the error, the
    other variants and parts still run, every file and the table are written, and only then
    does the exit status say that something failed."""
    gc = _module()
    zip_path = _first_zip(tmp_path / "galaxy_data.zip")
    out = tmp_path / "out"
    env = {gc.FAIL_VARIANT_ENV: "NHWC eager"}
    proc = _run(out, "--device", "cpu", "--smoke", "--first-zip", str(zip_path), "--budget-s", "300",
                "--threads", "1", "--parts", "train,first", "--work-dir", str(tmp_path / "work"), env=env)
    assert proc.returncode == 1, proc.stdout[-6000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    variants = {v["name"]: v for v in results["train"]["variants"]}
    failed = variants["NHWC eager"]
    assert failed["status"] == "error" and "exited with status" in failed["error"], failed
    assert variants["NCHW eager"]["status"] == "ok" and variants["NCHW eager"]["images_per_s"] > 0
    assert results["train"]["status"] == "partial" and results["first"]["status"] == "ok"
    assert results["summary"]["parts"] == {"train": "partial", "first": "ok"}
    for name in ("first_samples.png", "first_loss.png", "gpu_check.log", "results.json"):
        assert (out / name).stat().st_size > 0, name
    table = proc.stdout[proc.stdout.index("gpu_check summary"):]
    row = next(line for line in table.splitlines() if line.strip().startswith("NHWC eager"))
    assert "error" in row and "exited with status" in row
