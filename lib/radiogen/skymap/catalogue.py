"""Input catalogue of a simulated map: where each source goes and how bright it is.

A user catalogue (CSV or FITS table; ``RA``, ``DEC`` in degrees and
``Peak_flux`` in mJy/beam, the LoTSS columns; ``Source_Name`` optional;
``LAS`` in arcsec for a size-conditioned model) or positions drawn uniformly
over the map at ``source_density_deg2`` with peak fluxes (and sizes) from the
model's training histogram (``peak_flux: training``; flux and size jointly) or
a power law dN/dS ∝ S^-alpha (``power_law``; sizes then drawn from the
training histogram's size distribution at each flux).  Values outside the
model's training range are clipped (counted, logged and flagged per row) or
refused; positions off the map are dropped (counted, logged) or refused.

With ``sources: counts`` or ``catalogue`` the map holds a population
(:mod:`radiogen.skymap.population`): total fluxes and intrinsic sizes drawn
from the 144 MHz counts or read from a user table; each source's peak after
the beam is computed analytically, and a source becomes ``generated`` (by the
diffusion model, conditioned on that peak) when it is resolved by the
LoTSS-DR2 criterion and its peak lies in the model's training range, else a
``gaussian`` at its intrinsic size.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from astropy.table import Table

from radiogen.errors import CatalogueError, ConfigError, InputFileError
from radiogen.io import atomic_path
from radiogen.sampler import conditioning as cond
from radiogen.seeds import stream
from radiogen.simulate import sample_power_law, source_name
from radiogen.skymap.geometry import tile_index, wcs_of
from radiogen.skymap.settings import MapSettings

__all__ = ["CATALOGUE_STREAM", "training_peak_range_mjy", "read_user_catalogue", "input_catalogue",
           "write_sources", "read_sources",
           "write_map_sources", "training_size_range_arcsec"]

log = logging.getLogger(__name__)

#: Seed stream of the drawn catalogue (positions and fluxes; radiogen.seeds).
CATALOGUE_STREAM = stream("skymap.catalogue")
#: Seed stream of the counts population (positions, fluxes, sizes; radiogen.seeds).
POPULATION_STREAM = stream("skymap.population")
#: Kinds of map source: made by the diffusion model, or an analytic Gaussian.
SOURCE_KINDS = ("generated", "gaussian")
REQUIRED_COLUMNS = ("RA", "DEC", "Peak_flux")


def training_peak_range_mjy(meta: Mapping, *, source: str = "model") -> tuple[float, float]:
    """Peak-flux range of the model's training set, mJy/beam (edges of its context histogram)."""
    low, high = cond.training_peak_flux_range(meta, source=source)
    return low * 1e3, high * 1e3


def read_user_catalogue(path: str | Path) -> pd.DataFrame:
    """Read a CSV or FITS table with RA, DEC [deg] and Peak_flux [mJy/beam]."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: catalogue does not exist")
    try:
        if path.suffix.lower() in (".fits", ".fit", ".fits.gz"):
            table = Table.read(path).to_pandas()
        else:
            table = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise InputFileError(f"{path}: cannot read the catalogue ({err})") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise CatalogueError(f"{path}: missing column(s) {', '.join(missing)} "
                             f"(need RA, DEC in deg and Peak_flux in mJy/beam)")
    values = table[list(REQUIRED_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype=float)).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise CatalogueError(f"{path}: {bad.sum()} row(s) with non-numeric or NaN RA/DEC/Peak_flux "
                             f"(first rows {rows})")
    if (values["Peak_flux"] <= 0).any():
        rows = np.flatnonzero(values["Peak_flux"].to_numpy() <= 0)[:5].tolist()
        raise CatalogueError(f"{path}: Peak_flux must be > 0 mJy/beam (rows {rows})")
    out = values.astype(float)
    if "Source_Name" in table.columns:
        out["Source_Name"] = table["Source_Name"].astype(str).str.strip()
    if "LAS" in table.columns:
        las = pd.to_numeric(table["LAS"], errors="coerce").to_numpy(dtype=float)
        if not (np.isfinite(las) & (las > 0)).all():
            rows = np.flatnonzero(~(np.isfinite(las) & (las > 0)))[:5].tolist()
            raise CatalogueError(f"{path}: LAS must be a positive size in arcsec (rows {rows})")
        out["LAS"] = las
    return out


def _drawn(settings: MapSettings, meta: Mapping, *, size_px: int, scale_arcsec: float,
           header, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), CATALOGUE_STREAM]))
    area_deg2 = (size_px * scale_arcsec / 3600.0) ** 2
    n = int(rng.poisson(settings.source_density_deg2 * area_deg2))
    x = rng.uniform(-0.5, size_px - 0.5, n)
    y = rng.uniform(-0.5, size_px - 0.5, n)
    ra, dec = wcs_of(header).pixel_to_world_values(x, y)
    with_size = "size" in cond.context_names(meta)
    draw_seed = int(rng.integers(2**32))
    if settings.peak_flux == "training":
        z = cond.lotss_context(meta, np.arange(n), seed=draw_seed, mode="histogram")
        peak = cond.context_to_peak_flux(z[:, 0], meta) * 1e3
    else:
        low, high = settings.peak_flux_range_mjy
        peak = sample_power_law(rng, n, s_min=low, s_max=high, alpha=settings.power_law_slope)
        if with_size:
            z_flux = cond.peak_flux_to_context(peak * 1e-3, meta)
            rngs = [cond.image_rng(draw_seed, cond.SIZE_STREAM, k) for k in range(n)]
            z = np.column_stack([z_flux, cond.conditional_size_draws(meta, z_flux, rngs)])
    table = pd.DataFrame({"RA": np.asarray(ra) % 360.0, "DEC": dec, "Peak_flux": peak})
    if with_size:
        table["LAS"] = cond.context_to_size(z[:, 1], meta)
    log.info("drew %d sources over %.4f deg^2 (%.0f per deg^2), peak fluxes%s from %s", n, area_deg2,
             settings.source_density_deg2, " and sizes" if with_size else "", settings.peak_flux)
    return table


def training_size_range_arcsec(meta: Mapping, *, source: str = "model") -> tuple[float, float]:
    """Size range of a size-conditioned model's training set, arcsec (its 2-D histogram's edges)."""
    return cond.training_size_range(meta, source=source)


def _population(settings: MapSettings, meta: Mapping, header, *, seed: int, size_px: int,
                scale_arcsec: float, model_source: str) -> pd.DataFrame:
    """The population of ``sources: counts | catalogue`` with convolved peaks and kinds (see module doc)."""
    from radiogen.skymap import population as pop

    beam_arcsec = float(header["BMAJ"]) * 3600.0
    frequency_hz = float(header.get("RESTFRQ", 144e6))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), POPULATION_STREAM]))
    if settings.sources == "counts":
        area_deg2 = (size_px * scale_arcsec / 3600.0) ** 2
        low, high = (v * 1e-3 for v in settings.flux_range_mjy)
        density = pop.integral_counts_deg2(low, high, frequency_hz=frequency_hz)
        n = int(rng.poisson(density * area_deg2))
        x = rng.uniform(-0.5, size_px - 0.5, n)
        y = rng.uniform(-0.5, size_px - 0.5, n)
        ra, dec = wcs_of(header).pixel_to_world_values(x, y)
        total_jy = pop.draw_total_fluxes(rng, n, low, high, frequency_hz=frequency_hz)
        major, minor, pa = pop.draw_sizes(rng, total_jy, frequency_hz=frequency_hz)
        table = pd.DataFrame({"RA": np.asarray(ra, dtype=float) % 360.0, "DEC": np.asarray(dec, dtype=float),
                              "Total_flux": total_jy * 1e3, "Maj": major, "Min": minor, "PA": pa})
        log.info("drew %d sources over %.4f deg^2 from the 144 MHz counts (%.0f per deg^2 with total flux "
                 "%.4g-%.4g mJy)", n, area_deg2, density, *settings.flux_range_mjy)
    else:
        table = pop.read_population_catalogue(
            settings.catalogue, columns=settings.catalogue_columns, flux_unit=settings.catalogue_flux_unit,
            size_unit=settings.catalogue_size_unit, sizes=settings.catalogue_sizes, beam_arcsec=beam_arcsec)
        log.info("read %d sources from %s", len(table), settings.catalogue)
    total = table["Total_flux"].to_numpy(dtype=float)
    peak = pop.convolved_peak(total, table["Maj"], table["Min"], beam_arcsec)
    error = pop.total_flux_error(settings.noise_rms_ujy * 1e-3, table["Maj"], table["Min"], beam_arcsec)
    is_resolved = pop.resolved(total, peak, error)
    low, high = training_peak_range_mjy(meta, source=model_source)
    generated = is_resolved & (peak >= low) & (peak <= high)
    table["Peak_flux"] = peak
    table["Resolved"] = is_resolved
    table["kind"] = np.where(generated, "generated", "gaussian")
    if "size" in cond.context_names(meta):
        las = np.full(len(table), np.nan)
        rows = np.flatnonzero(generated)
        if rows.size:
            z_flux = cond.peak_flux_to_context(peak[rows] * 1e-3, meta)
            draw_seed = int(rng.integers(2**32))
            rngs = [cond.image_rng(draw_seed, cond.SIZE_STREAM, int(k)) for k in rows]
            las[rows] = cond.context_to_size(cond.conditional_size_draws(meta, z_flux, rngs), meta)
        table["LAS"] = las
    log.info("%d source(s): %d resolved (LoTSS-DR2 criterion), %d of them generated by the model (convolved peak "
             "in its training range %.4g-%.4g mJy/beam), %d Gaussian(s)", len(table), int(is_resolved.sum()),
             int(generated.sum()), low, high, int((~generated).sum()))
    return table


def input_catalogue(settings: MapSettings, meta: Mapping, header, *, seed: int,
                    model_source: str = "model") -> pd.DataFrame:
    """The sources of the map with pixel positions, tiles and model-range peak fluxes.

    Returns
    -------
    DataFrame
        ``index`` (0..n-1, seeds the source's image), ``Source_Name``, ``RA``,
        ``DEC`` [deg], ``x``, ``y`` (0-based pixel), ``ix``, ``iy`` (placement
        pixel), ``tile``, ``Peak_flux`` [mJy/beam, as used], ``Peak_flux_input``
        and ``Peak_flux_clipped``.
    """
    size_px = int(header["NAXIS1"])
    scale_arcsec = abs(float(header["CDELT2"])) * 3600.0
    population = settings.sources in ("counts", "catalogue")
    if population:
        table = _population(settings, meta, header, seed=seed, size_px=size_px, scale_arcsec=scale_arcsec,
                            model_source=model_source)
        where = str(settings.catalogue) if settings.sources == "catalogue" else "counts population"
    elif settings.catalogue:
        table = read_user_catalogue(settings.catalogue)
        where = str(settings.catalogue)
    else:
        table = _drawn(settings, meta, size_px=size_px, scale_arcsec=scale_arcsec, header=header, seed=seed)
        where = "drawn catalogue"
    x, y = wcs_of(header).world_to_pixel_values(table["RA"].to_numpy(), table["DEC"].to_numpy())
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ix, iy = np.floor(x + 0.5).astype(np.int64), np.floor(y + 0.5).astype(np.int64)
    inside = np.isfinite(x) & np.isfinite(y) & (ix >= 0) & (iy >= 0) & (ix < size_px) & (iy < size_px)
    if not inside.all():
        first = int(np.flatnonzero(~inside)[0])
        message = (f"{where}: {int((~inside).sum())} of {len(table)} source(s) lie off the "
                   f"{size_px}x{size_px} px map (first: row {first}, RA {table['RA'].iloc[first]:.5f}, "
                   f"Dec {table['DEC'].iloc[first]:.5f})")
        if settings.outside == "error":
            raise CatalogueError(message + "; set skymap.outside: drop to leave them out")
        log.warning("%s; dropped (skymap.outside: drop)", message)
    table = table.loc[inside].reset_index(drop=True)
    x, y, ix, iy = x[inside], y[inside], ix[inside], iy[inside]

    out = pd.DataFrame({"index": np.arange(len(table), dtype=np.int64)})
    if "Source_Name" in table.columns:
        out["Source_Name"] = table["Source_Name"].to_numpy()
    else:
        out["Source_Name"] = [source_name(r, d) for r, d in zip(table["RA"], table["DEC"])]
    if out["Source_Name"].duplicated().any():
        raise CatalogueError(f"{where}: Source_Name values are not unique "
                             f"(e.g. {out['Source_Name'][out['Source_Name'].duplicated()].iloc[0]})")
    out["RA"], out["DEC"] = table["RA"].to_numpy(), table["DEC"].to_numpy()
    out["x"], out["y"], out["ix"], out["iy"] = x, y, ix, iy
    out["tile"] = tile_index(ix, iy, size_px=size_px, tile_px=settings.tile_px)
    if population:
        for column in ("kind", "Total_flux", "Maj", "Min", "PA", "Resolved", "Peak_flux"):
            out[column] = table[column].to_numpy()
        out["Peak_flux_input"] = out["Peak_flux"]
        out["Peak_flux_clipped"] = False
        if "LAS" in table.columns:
            out["LAS"] = table["LAS"].to_numpy()
        return out
    out["kind"] = "generated"
    _clip_column(out, table, "Peak_flux", training_peak_range_mjy(meta, source=model_source),
                 what="peak flux(es)", unit="mJy/beam", where=where, settings=settings)
    if "size" in cond.context_names(meta):
        if "LAS" not in table.columns:
            raise CatalogueError(f"{where}: the model is conditioned on size, but the catalogue has no LAS "
                                 "column (largest angular size, arcsec)")
        _clip_column(out, table, "LAS", training_size_range_arcsec(meta, source=model_source),
                     what="size(s)", unit="arcsec", where=where, settings=settings)
    elif "LAS" in table.columns:
        log.info("%s: LAS column ignored, the model is conditioned on peak flux only", where)
    return out


def _clip_column(out: pd.DataFrame, table: pd.DataFrame, column: str, limits: tuple[float, float], *,
                 what: str, unit: str, where: str, settings: MapSettings) -> None:
    """``out[column]`` = ``table[column]`` clipped to the training range (``_input``, ``_clipped`` kept)."""
    low, high = limits
    values = table[column].to_numpy(dtype=float)
    clipped = (values < low) | (values > high)
    if clipped.any():
        message = (f"{where}: {int(clipped.sum())} of {len(table)} {what} outside the model's training "
                   f"range [{low:.4g}, {high:.4g}] {unit}")
        if settings.out_of_range == "error":
            raise CatalogueError(message + "; set skymap.out_of_range: clip to clip them")
        log.warning("%s; clipped to the range (skymap.out_of_range: clip)", message)
    out[f"{column}_input"] = values
    out[column] = np.clip(values, low, high)
    out[f"{column}_clipped"] = clipped


def write_sources(table: pd.DataFrame, path: str | Path) -> Path:
    """Write the input catalogue CSV atomically (the tiles record its digest)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.10g")
    return Path(path)


def read_sources(path: str | Path) -> pd.DataFrame:
    """Read a catalogue written by :func:`write_sources`, checking its columns."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: source catalogue does not exist")
    table = pd.read_csv(path)
    needed = ("index", "Source_Name", "RA", "DEC", "ix", "iy", "tile", "Peak_flux")
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise InputFileError(f"{path}: not a radiogen map catalogue (missing {', '.join(missing)})")
    if not np.array_equal(table["index"].to_numpy(), np.arange(len(table))):
        raise InputFileError(f"{path}: column index must be 0..n-1 in order")
    return table


def _check_catalogue_exists(settings: MapSettings) -> None:
    """A configured catalogue must exist before the model is loaded."""
    if settings.catalogue and not Path(settings.catalogue).exists():
        raise ConfigError(f"skymap.catalogue: {settings.catalogue} does not exist")
    if settings.sources == "catalogue":  # columns and units named before the model is loaded
        from radiogen.skymap.population import read_population_catalogue

        read_population_catalogue(settings.catalogue, columns=settings.catalogue_columns,
                                  flux_unit=settings.catalogue_flux_unit, size_unit=settings.catalogue_size_unit,
                                  sizes=settings.catalogue_sizes, beam_arcsec=1.0)


def write_map_sources(model_path: str | Path, settings: MapSettings, *, seed: int, name: str,
                      sources_csv: str | Path, header_path: str | Path) -> pd.DataFrame:
    """Build the map grid from the model's geometry and write it with the input catalogue.

    ``header_path`` receives the map header as text (read by the later
    steps), ``sources_csv`` the catalogue of :func:`input_catalogue`.
    """
    from radiogen.sampler.generate import check_model_kind, load_sampling_model
    from radiogen.skymap.geometry import map_header, map_size_px, model_geometry

    _check_catalogue_exists(settings)
    _net, meta = load_sampling_model(model_path)
    check_model_kind(meta, str(model_path), dataset="lotss")
    geometry = model_geometry(meta)
    size_px = map_size_px(settings.size_deg, pixel_scale_arcsec=geometry["pixel_scale_arcsec"])
    header = map_header(size_px=size_px, name=name, centre_ra_deg=settings.centre_ra_deg,
                        centre_dec_deg=settings.centre_dec_deg, template=settings.header_template, **geometry)
    table = input_catalogue(settings, meta, header, seed=seed, model_source=str(model_path))
    with atomic_path(header_path) as tmp:
        header.totextfile(str(tmp), overwrite=True)
    write_sources(table, sources_csv)
    log.info("map %s: %d x %d px (%.3f deg), %d source(s) in %d tile(s) of %d px", name, size_px, size_px,
             size_px * geometry["pixel_scale_arcsec"] / 3600.0, len(table),
             int(np.ceil(size_px / settings.tile_px)) ** 2, settings.tile_px)
    return table
