"""``radiogen generate``: images for a user's request, straight from a model file.

A request names the model, how many images, and optionally what they show
(FIRST classes; LoTSS peak fluxes and, for a size-conditioned model, sizes).
:func:`check_request` turns it into the dataset block that
:func:`radiogen.sampler.generate.conditioning` reads, refusing anything the
model cannot honour before any network evaluation: a class the model does not
know, a flux or size outside the range of its training split (the outer edges
of the context histograms stored in the model file), a size for a model
without size context, a flux for a FIRST model, conflicting options.

How the conditions are chosen (image ``i`` of ``n``; every draw seeded by the
global seed and ``i``, :mod:`radiogen.sampler.conditioning`):

- FIRST: ``classes[i mod len(classes)]``; without classes all the model's
  classes in turn.
- LoTSS: ``peak_flux[i mod len]`` (Jy/beam), flat on ``peak_flux_range`` (in
  ``range_space``), or without either the model's training distribution.  A
  size-conditioned model takes ``size`` / ``size_range`` (arcsec) the same way;
  a size left out is drawn from the training histogram at each image's flux,
  a flux left out from it at each image's size.

The images themselves are those of a workflow sample set with the same seed
and sampler settings (image ``i`` depends only on the seed, ``i``, the model,
the solver, its steps and ``rho``, the guidance w and the guide: the model's
own unconditional pass, or a weaker model of the same kind for autoguidance,
loaded and checked as the workflow's ``sample.<dataset>.guide``).
:func:`generate` returns them in memory; :func:`generate_to` writes them, as
the samples HDF5 format, one multi-extension FITS file, or a folder of one
FITS file per image (the headers of
:func:`radiogen.sampler.fits_export.export_fits`: WCS, beam, units, the
image's conditions).  :func:`generate_to` works in shards in a folder
``<out>.shards`` next to the output, so that a killed run resumes where it
stopped and ``executor="slurm"`` can run the shards as a SLURM job array
(:mod:`radiogen.sampler.slurm_array`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from radiogen.config import section_defaults
from radiogen.errors import ConfigError, InputFileError
from radiogen.sampler import conditioning as cond
from radiogen.testhooks import block_point

__all__ = ["OUTPUT_KINDS", "Generated", "check_request", "output_kind", "generate", "generate_to"]

log = logging.getLogger(__name__)

_SAMPLE = section_defaults("sample")
#: Global seed when none is given: the workflow's (config ``seed``), so both make the same images.
DEFAULT_SEED = int(section_defaults("")["seed"])
#: Output kinds by file suffix; anything else (or a trailing ``/``) is a folder of FITS files.
OUTPUT_KINDS = {".fits": "fits", ".fit": "fits", ".fts": "fits", ".h5": "hdf5", ".hdf5": "hdf5"}
#: Relative tolerance of the training-range check (edges come back through float32 context).
_RANGE_RTOL = 1e-6


class Generated(NamedTuple):
    """Images and the conditions each was generated for.

    Attributes
    ----------
    images : numpy.ndarray
        (n, H, W) float32 in [0, 1], as in the samples HDF5 format (LoTSS:
        ``images * conditions["peak_flux"][:, None, None]`` is in Jy/beam; FIRST
        images have no flux scale).
    conditions : dict of numpy.ndarray
        ``index`` (image index, seeds its noise), ``context`` (model input);
        LoTSS ``peak_flux`` (Jy/beam) and for a size-conditioned model ``size``
        (arcsec); FIRST ``label`` and ``class`` (class names).
    """

    images: np.ndarray
    conditions: dict


def _values(option: str, values, *, positive: bool = True) -> list[float] | None:
    if values is None or (not np.isscalar(values) and len(values) == 0):
        return None
    values = [float(v) for v in np.atleast_1d(values)]
    if positive and not all(np.isfinite(v) and v > 0 for v in values):
        raise ConfigError(f"{option}: values must be positive finite numbers, got {values}")
    return values


def _pair(option: str, values) -> list[float] | None:
    values = _values(option, values)
    if values is None:
        return None
    if len(values) != 2 or values[0] > values[1]:
        raise ConfigError(f"{option}: give LOW HIGH with LOW <= HIGH, got {values}")
    return values


def _within(option: str, values: Sequence[float], limits: tuple[float, float], unit: str, source: str,
            stored: str) -> None:
    low, high = limits
    outside = [v for v in values if v < low * (1 - _RANGE_RTOL) or v > high * (1 + _RANGE_RTOL)]
    if outside:
        raise ConfigError(
            f"{option} {', '.join(f'{v:g}' for v in outside)} {unit} outside the range {source} was trained on, "
            f"{low:.4g} to {high:.4g} {unit} ({stored} in the model file): the model has never seen such sources")


def check_request(meta: Mapping, *, n: int, classes: Sequence[str] | None = None,
                  peak_flux: Sequence[float] | None = None, peak_flux_range: Sequence[float] | None = None,
                  range_space: str = _SAMPLE["lotss"]["range_space"], size: Sequence[float] | None = None,
                  size_range: Sequence[float] | None = None, source: str = "model") -> dict:
    """Check a request against the model and return its dataset block for sampling.

    Parameters
    ----------
    meta : mapping
        Model metadata (:func:`radiogen.sampler.generate.load_sampling_model`).
    n : int
        Number of images (>= 1).
    classes : sequence of str, optional
        FIRST class names (case-insensitive), taken in turn.
    peak_flux, peak_flux_range : sequence of float, optional
        LoTSS peak fluxes in Jy/beam taken in turn, or [low, high] drawn flat
        in ``range_space``; at most one of the two.
    size, size_range : sequence of float, optional
        Sizes in arcsec (the model's size measure), for a size-conditioned model.
    source : str
        The model file, named in messages.

    Returns
    -------
    dict
        ``n_images`` and the conditioning keys of a ``sample.lotss`` block
        (plus ``size_mode``), or ``n_images`` and ``classes`` for FIRST.

    Raises
    ------
    ConfigError
        Any request the model cannot honour (see the module docstring).
    InputFileError
        A model file that lacks what the check needs (classes, training ranges).
    """
    from radiogen.sampler.generate import check_model_kind

    if isinstance(n, bool) or int(n) != n or int(n) < 1:
        raise ConfigError(f"-n: the number of images must be a whole number >= 1, got {n!r}")
    check_model_kind(meta, source)
    peak_flux, size = _values("--peak-flux", peak_flux), _values("--size", size)
    peak_flux_range, size_range = _pair("--peak-flux-range", peak_flux_range), _pair("--size-range", size_range)
    if peak_flux and peak_flux_range:
        raise ConfigError("--peak-flux and --peak-flux-range conflict: give fluxes or a range, not both")
    if size and size_range:
        raise ConfigError("--size and --size-range conflict: give sizes or a range, not both")
    if meta["dataset"] == "first":
        given = [o for o, v in (("--peak-flux", peak_flux), ("--peak-flux-range", peak_flux_range),
                                ("--size", size), ("--size-range", size_range)) if v]
        if given:
            raise ConfigError(f"{', '.join(given)}: {source} is a FIRST model, conditioned on morphology class "
                              f"only ({', '.join(meta['class_names'])}); use --class")
        names = list(meta["class_names"])
        wanted = cond.class_indices(list(classes) if classes else names, names, source=source)
        return {"n_images": int(n), "classes": [names[k] for k in wanted]}

    if classes:
        raise ConfigError(f"--class: {source} is a LoTSS model, conditioned on "
                          f"{' and '.join(cond.context_names(meta))}, not on classes")
    with_size = "size" in cond.context_names(meta)
    if (size or size_range) and not with_size:
        raise ConfigError(f"--size/--size-range: {source} is conditioned on peak flux only (no size context); "
                          "train it with lotss.preprocess.context: peak_flux+size to choose sizes")
    if range_space not in ("boxcox", "log", "linear"):
        raise ConfigError(f"--range-space: unknown {range_space!r} (boxcox, log, linear)")
    if peak_flux or peak_flux_range:
        _within("--peak-flux" if peak_flux else "--peak-flux-range", peak_flux or peak_flux_range,
                cond.training_peak_flux_range(meta, source=source), "Jy/beam", source, "context_histogram")
    if size or size_range:
        _within("--size" if size else "--size-range", size or size_range,
                cond.training_size_range(meta, source=source), "arcsec", source, "context_histogram_2d")
    mode = "list" if peak_flux else "range" if peak_flux_range else "histogram"
    settings = {"n_images": int(n), "conditioning": mode, "peak_flux": peak_flux or [],
                "peak_flux_range": peak_flux_range, "range_space": range_space}
    if with_size:
        settings.update(size=size or [], size_range=size_range,
                        size_mode="list" if size else "range" if size_range else "histogram")
    else:
        cond.training_peak_flux_range(meta, source=source)  # the histogram draws need it too
    return settings


def output_kind(out: str | os.PathLike) -> str:
    """``fits`` (one multi-extension file), ``hdf5`` (samples format) or ``dir`` (one FITS file per image)."""
    text = os.fspath(out)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        return "dir"
    suffix = Path(text).suffix.lower()
    if suffix in OUTPUT_KINDS:
        return OUTPUT_KINDS[suffix]
    if suffix:
        raise ConfigError(f"--out {text}: unknown suffix {suffix!r}; use .fits, .h5 or a folder ending in /")
    return "dir"


def _defaults(meta: Mapping, guidance: float | None, steps: int | None, solver: str, rho: float,
              schedule: str = _SAMPLE["sampler"]["schedule"]) -> tuple[float, dict]:
    """Guidance (the workflow's default for the model's dataset) and the sampler block."""
    from radiogen.sampler.solvers import SOLVERS

    guidance = float(_SAMPLE[meta["dataset"]]["guidance"] if guidance is None else guidance)
    if not (np.isfinite(guidance) and guidance >= 0):
        raise ConfigError(f"--guidance: must be a finite number >= 0, got {guidance}")
    sampler = dict(_SAMPLE["sampler"])
    if steps is not None:
        if isinstance(steps, bool) or int(steps) != steps or int(steps) < 1:
            raise ConfigError(f"--steps: must be a whole number >= 1, got {steps!r}")
        sampler["num_steps"] = int(steps)
    if solver not in SOLVERS:
        raise ConfigError(f"--solver: unknown {solver!r} ({', '.join(SOLVERS)})")
    try:
        rho_value = float(rho) if not isinstance(rho, bool) else float("nan")
    except (TypeError, ValueError):
        rho_value = float("nan")
    if not (np.isfinite(rho_value) and rho_value > 0):
        raise ConfigError(f"--rho: must be a finite number > 0, got {rho!r}")
    if not isinstance(schedule, str) or not (schedule == "karras" or Path(schedule).is_file()):
        raise ConfigError(f"--schedule: {schedule!r} is neither 'karras' nor an existing schedule file")
    sampler.update(solver=str(solver), rho=rho_value, schedule=schedule)
    return guidance, sampler


def _guide(guide: str | os.PathLike | None, meta: Mapping, *, source: str, device="cpu"):
    """``(network, path, name)`` of ``--guide``: ``unconditional`` (or None) is classifier-free guidance,
    anything else a model file, loaded and checked against the model as the workflow's guides."""
    from radiogen.sampler.shards import UNCONDITIONAL, load_guide

    if guide is None or os.fspath(guide) == UNCONDITIONAL:
        return None, None, UNCONDITIONAL
    path = Path(guide)
    try:
        net, name = load_guide(path, meta, source=source, device=device)
    except InputFileError as err:
        raise ConfigError(f"--guide: {err}") from err
    return net, path, name


def _conditions(meta: Mapping, arrays: Mapping[str, np.ndarray]) -> dict:
    conditions = {k: v for k, v in arrays.items() if k != "images"}
    if "label" in conditions:
        conditions["class"] = np.asarray(meta["class_names"])[conditions["label"]]
    return conditions


def generate(model: str | os.PathLike, *, n: int, classes: Sequence[str] | None = None,
             peak_flux: Sequence[float] | None = None, peak_flux_range: Sequence[float] | None = None,
             range_space: str = _SAMPLE["lotss"]["range_space"], size: Sequence[float] | None = None,
             size_range: Sequence[float] | None = None, seed: int = DEFAULT_SEED, guidance: float | None = None,
             steps: int | None = None, solver: str = _SAMPLE["sampler"]["solver"],
             rho: float = _SAMPLE["sampler"]["rho"], guide: str | os.PathLike | None = "unconditional",
             schedule: str = _SAMPLE["sampler"]["schedule"], device: str = "auto",
                precision: str = _SAMPLE["precision"],
             batch_size: int = _SAMPLE["batch_size"]) -> Generated:
    """Generate ``n`` images from a model file, in memory.

    Parameters
    ----------
    model : path
        A radiogen model file (``model.pt``).
    n, classes, peak_flux, peak_flux_range, range_space, size, size_range
        The request (:func:`check_request`); fluxes in Jy/beam, sizes in arcsec.
    seed : int
        Global seed: the same seed gives the same images (config ``seed`` by default).
    guidance : float, optional
        Classifier-free guidance w (default: ``sample.lotss.guidance`` or
        ``sample.first.guidance`` for the model's dataset).
    steps : int, optional
        Sampler steps N (default ``sample.sampler.num_steps``).
    solver : str
        ODE solver, one of :data:`radiogen.sampler.solvers.SOLVERS`
        (``sample.sampler.solver``); ``unipc`` with 12 steps and ``rho=10`` is
        the measured <= 12-evaluation choice (benchmarks/RESULTS.md).
    rho : float
        Exponent of the noise-level schedule (``sample.sampler.rho``).
    schedule : str
        ``karras`` (the rho schedule) or a schedule file of ``radiogen sample schedule``
        (GITS) made for this model, whose levels replace ``steps`` and ``rho``
        (``sample.sampler.schedule``).
    guide : path or "unconditional"
        The guide of the guidance: ``"unconditional"`` (the model's own
        unconditional pass, classifier-free guidance) or a model file of the
        same kind, e.g. an early EMA snapshot of the same training run
        (autoguidance, Karras et al. 2024); an incompatible one is a
        :class:`ConfigError` before any work.
    device : str
        ``auto`` (the GPU when one is visible), ``cpu``, ``cuda``, ``cuda:1`` ...
    precision : {"auto", "fp32", "bf16"}
        Network precision (``sample.precision``).
    batch_size : int
        Images per network batch.

    Returns
    -------
    Generated
        ``(images, conditions)``; see :class:`Generated`.
    """
    from radiogen.progress import Progress
    from radiogen.sampler import generate as gen

    torch_device = gen.resolve_device(device)
    autocast_dtype = gen.resolve_autocast(precision, torch_device)
    net, meta = gen.load_sampling_model(model, device=torch_device)
    source = str(model)
    settings = check_request(meta, n=n, classes=classes, peak_flux=peak_flux, peak_flux_range=peak_flux_range,
                             range_space=range_space, size=size, size_range=size_range, source=source)
    guidance, sampler = _defaults(meta, guidance, steps, solver, rho, schedule)
    guide_net, _path, _name = _guide(guide, meta, source=source, device=torch_device)
    bar = Progress(int(n), f"{meta['dataset']} images", logger=log)
    done = [0]

    def progress(count: int, _total: int) -> None:
        bar.update(count - done[0])
        done[0] = count

    arrays = gen.generate_images(net, meta, np.arange(int(n)), seed=int(seed), guidance=guidance, sampler=sampler,
                                 settings=settings, batch_size=int(batch_size), device=torch_device,
                                 autocast_dtype=autocast_dtype, progress=progress, source=source, guide=guide_net,
                                 model_digest=gen.model_id(model))
    bar.close()
    return Generated(arrays["images"], _conditions(meta, arrays))


def _work_key(model: Path, *, seed: int, guidance: float, guide: str, sampler: Mapping, settings: Mapping,
              images_per_shard: int) -> dict:
    """Everything the images depend on (``guide``: ``unconditional`` or the guide file's digest)."""
    from radiogen.sampler.generate import model_id

    return {"model_id": model_id(model), "seed": int(seed), "guidance": float(guidance), "guide": guide,
            "sampler": dict(sampler), "settings": dict(settings), "images_per_shard": int(images_per_shard)}


def _prepare_work(work: Path, key: dict) -> None:
    """Create ``work`` (or reuse it for the same request); another request's shards are an error."""
    request_file = work / "request.json"
    text = json.dumps(key, sort_keys=True, indent=1)
    if request_file.exists():
        old = json.loads(request_file.read_text())
        if old != json.loads(text):
            differ = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
            raise ConfigError(f"{work}: holds shards of another request ({', '.join(differ)} differ); "
                              "remove the folder or choose another --out")
        return
    if work.exists() and any(work.iterdir()):
        raise ConfigError(f"{work}: exists and is not a radiogen generate work folder; "
                          "remove it or choose another --out")
    work.mkdir(parents=True, exist_ok=True)
    request_file.write_text(text)


def shard_complete(path: Path, *, shard: int, n_total: int, images_per_shard: int) -> bool:
    """Whether ``path`` is a finished shard file of this request (complete, readable)."""
    import h5py

    if not path.exists():
        return False
    try:
        with h5py.File(path, "r") as h5:
            attrs = dict(h5.attrs)
            n = h5["images"].shape[0]
    except (OSError, KeyError) as err:
        log.warning("%s: unreadable shard (%s), generating it again", path, err)
        return False
    expected = min(images_per_shard, n_total - shard * images_per_shard)
    return (int(attrs.get("shard", -1)) == shard and int(attrs.get("n_images_total", -1)) == n_total
            and n == expected)


def run_shard(model: str, path: str, *, shard: int, job: Mapping) -> str:
    """Generate one shard file (in this process, or as a SLURM array task)."""
    from radiogen.sampler.shards import write_shard

    if job.get("threads"):
        import torch

        torch.set_num_threads(int(job["threads"]))
    write_shard(model, path, shard=shard, seed=job["seed"], guidance=job["guidance"], settings=job["settings"],
                sampler=job["sampler"], images_per_shard=job["images_per_shard"], batch_size=job["batch_size"],
                device=job["device"], precision=job["precision"], guide_path=job["guide"])
    return str(path)


def generate_to(out: str | os.PathLike, model: str | os.PathLike, *, n: int, classes: Sequence[str] | None = None,
                peak_flux: Sequence[float] | None = None, peak_flux_range: Sequence[float] | None = None,
                range_space: str = _SAMPLE["lotss"]["range_space"], size: Sequence[float] | None = None,
                size_range: Sequence[float] | None = None, seed: int = DEFAULT_SEED, guidance: float | None = None,
                steps: int | None = None, solver: str = _SAMPLE["sampler"]["solver"],
                rho: float = _SAMPLE["sampler"]["rho"], guide: str | os.PathLike | None = "unconditional",
                schedule: str = _SAMPLE["sampler"]["schedule"], device: str = "auto",
                precision: str = _SAMPLE["precision"],
                batch_size: int = _SAMPLE["batch_size"], executor: str = "local",
                images_per_shard: int | None = None, overwrite: bool = False,
                ra_deg: float = _SAMPLE["fits"]["ra_deg"], dec_deg: float = _SAMPLE["fits"]["dec_deg"],
                freq_stokes_axes: bool = _SAMPLE["fits"]["freq_stokes_axes"],
                slurm: Mapping | None = None) -> Path:
    """Generate ``n`` images into ``out``: ``.h5`` (samples format), ``.fits`` or a folder of FITS files.

    The request, ``seed``, ``guidance``, ``steps``, ``solver``, ``rho``,
    ``guide``, ``device``, ``precision`` and ``batch_size`` are those of
    :func:`generate`.

    Parameters
    ----------
    executor : {"local", "slurm"}
        Run the shards here one after the other, or as a SLURM job array
        (``slurm``: resources, :func:`radiogen.sampler.slurm_array.run_array`).
    images_per_shard : int, optional
        Images per shard (default: all in one shard locally; on SLURM
        ``sample.<dataset>.images_per_shard``).  Shard files wait in
        ``<out>.shards/``; a rerun of the same request makes only the missing
        ones, and the folder goes once ``out`` is written.  A rerun with
        anything the images depend on changed (seed, guidance, guide file,
        solver, steps, rho, conditions, shard size) is refused.
    overwrite : bool
        Replace an existing output file (a folder output must be new or empty).
    ra_deg, dec_deg, freq_stokes_axes
        FITS outputs: image centre (ICRS, deg) and the FREQ/STOKES axes
        (``sample.fits``).

    Returns
    -------
    Path
        ``out``.
    """
    from radiogen.sampler import generate as gen
    from radiogen.sampler.shards import aggregate_shards, n_shards

    if executor not in ("local", "slurm"):
        raise ConfigError(f"--executor: unknown {executor!r} (local, slurm)")
    kind = output_kind(out)
    out = Path(out)
    if kind == "dir":
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ConfigError(f"--out {out}: folder output needs a new or empty folder")
    elif out.exists() and not overwrite:
        raise ConfigError(f"--out {out}: exists; remove it or pass --overwrite")
    model = Path(model)
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"--precision: unknown {precision!r} (auto, fp32, bf16)")
    if executor == "local":
        gen.resolve_device(device)  # a GPU asked for where there is none: an error now, not after the checks
    _net, meta = gen.load_sampling_model(model)
    source = str(model)
    settings = check_request(meta, n=n, classes=classes, peak_flux=peak_flux, peak_flux_range=peak_flux_range,
                             range_space=range_space, size=size, size_range=size_range, source=source)
    guidance, sampler = _defaults(meta, guidance, steps, solver, rho, schedule)
    _guide_net, guide_path, guide_name = _guide(guide, meta, source=source)
    if images_per_shard is None:
        images_per_shard = int(n) if executor == "local" else int(_SAMPLE[meta["dataset"]]["images_per_shard"])
    if int(images_per_shard) < 1:
        raise ConfigError(f"--images-per-shard: must be >= 1, got {images_per_shard}")
    images_per_shard = min(int(images_per_shard), int(n))
    if executor == "slurm":
        from radiogen.sampler.slurm_array import check_resources

        slurm = check_resources(slurm or {})
    del _net, _guide_net

    work = out.with_name(out.name + ".shards")
    _prepare_work(work, _work_key(model, seed=seed, guidance=guidance, guide=guide_name, sampler=sampler,
                                  settings=settings, images_per_shard=images_per_shard))
    count = n_shards(int(n), images_per_shard)
    paths = {s: work / f"shard-{s:06d}.h5" for s in range(count)}
    def complete(shard: int, path: Path) -> bool:
        return shard_complete(path, shard=shard, n_total=int(n), images_per_shard=images_per_shard)

    missing = [s for s, p in paths.items() if not complete(s, p)]
    log.info("%s: %d image(s) in %d shard(s), %d to generate (%s)", out, n, count, len(missing), executor)
    job = {"seed": int(seed), "guidance": guidance, "settings": settings, "sampler": sampler,
           "images_per_shard": images_per_shard, "batch_size": int(batch_size), "device": device,
           "precision": precision, "guide": None if guide_path is None else str(guide_path.resolve())}
    if executor == "local":
        for done, shard in enumerate(missing, start=1):
            run_shard(str(model), str(paths[shard]), shard=shard, job=job)
            block_point("generate.shard", done)
    elif missing:
        from radiogen.sampler.slurm_array import run_array

        run_array(run_shard, model=str(model.resolve()), paths={s: paths[s].resolve() for s in missing}, job=job,
                  work=work.resolve(), resources=slurm, done=complete)
    samples = out if kind == "hdf5" else work / "samples.h5"
    aggregate_shards([paths[s] for s in range(count)], samples)
    if kind != "hdf5":
        _write_fits(samples, out, kind=kind, work=work, n=int(n), ra_deg=ra_deg, dec_deg=dec_deg,
                    freq_stokes_axes=freq_stokes_axes)
    shutil.rmtree(work)
    log.info("wrote %d %s image(s) to %s", n, meta["dataset"], out)
    return out


def _write_fits(samples: Path, out: Path, *, kind: str, work: Path, n: int, ra_deg: float, dec_deg: float,
                freq_stokes_axes: bool) -> None:
    """FITS files of the export step: one multi-extension file, or one file per image in a new folder."""
    from radiogen.sampler.fits_export import export_fits

    staging = work / "fits"
    shutil.rmtree(staging, ignore_errors=True)
    options = {"ra_deg": ra_deg, "dec_deg": dec_deg, "freq_stokes_axes": freq_stokes_axes}
    if kind == "fits":
        (written,) = export_fits(samples, staging, layout="multi_extension", images_per_file=n, **options)
        os.replace(written, out)
    else:
        export_fits(samples, staging, layout="images", **options)
        if out.exists():
            out.rmdir()  # checked empty before any work
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, out)
    if not out.exists():
        raise InputFileError(f"{out}: not written")
