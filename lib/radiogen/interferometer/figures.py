"""The imaging products as a figure: restored map, residual map and PSF, with the restoring beam.

Axes are offsets from the phase centre (the map's centre pixel N/2, counting
from 0): ΔRA cos δ increasing to the left (east), ΔDec up, as on the sky.  The
maps are in mJy/beam; the PSF is WSClean's, normalised to a peak of 1.  The
fitted restoring beam (BMAJ, BMIN, BPA of the restored image's header) is drawn
as its half-power ellipse: in the lower left corner of the maps and over the
PSF's main lobe, where it should trace the lobe's half-power contour.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from radiogen.errors import InputFileError
from radiogen.io import save_figure

__all__ = ["beam_of", "plot_imaging_products"]

#: Half-width of the PSF panel in restoring-beam major axes (enough to show the near sidelobes).
PSF_HALF_WIDTH_BEAMS = 8.0


def _plane(path: str | Path) -> tuple[np.ndarray, fits.Header]:
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: image does not exist")
    with fits.open(path) as hdul:
        data, header = np.asarray(hdul[0].data, dtype=np.float64), hdul[0].header
    if data.ndim < 2 or any(n != 1 for n in data.shape[:-2]):
        raise InputFileError(f"{path}: expected one sky plane, got an image of shape {data.shape}")
    return data.reshape(data.shape[-2:]), header


def beam_of(header: fits.Header, *, source) -> tuple[float, float, float]:
    """Restoring beam (major, minor FWHM in arcsec; position angle in deg, north through east)."""
    try:
        return float(header["BMAJ"]) * 3600.0, float(header["BMIN"]) * 3600.0, float(header.get("BPA", 0.0))
    except KeyError as err:
        raise InputFileError(f"{source}: no restoring beam ({err.args[0]}) in the header") from err


def _offsets_arcmin(header: fits.Header, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) in arcmin from the centre pixel, east to the left."""
    scale = abs(float(header["CDELT2"])) * 60.0
    ny, nx = shape
    # Pixel edges relative to the centre pixel (N/2, counting from 0); RA pixel steps are negative.
    east_sign = -np.sign(float(header["CDELT1"]))
    left, right = (-0.5 - nx // 2) * scale * east_sign, (nx - 0.5 - nx // 2) * scale * east_sign
    return left, right, (-0.5 - ny // 2) * scale, (ny - 0.5 - ny // 2) * scale


def _beam_ellipse(beam: tuple[float, float, float], centre: tuple[float, float], **style):
    from matplotlib.patches import Ellipse

    bmaj, bmin, bpa = beam
    # Data x is ΔRA (east positive): the major axis points (sin BPA, cos BPA), i.e. BPA clockwise of +y.
    return Ellipse(centre, width=bmin / 60.0, height=bmaj / 60.0, angle=-bpa, fill=False, **style)


def plot_imaging_products(restored: str | Path, residual: str | Path, psf: str | Path, output: str | Path, *,
                          title: str) -> None:
    """Three panels: restored map, residual map (mJy/beam) and PSF (peak 1), with the beam ellipse."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.visualization import AsinhStretch, ImageNormalize, PercentileInterval

    restored_map, header = _plane(restored)
    residual_map, residual_header = _plane(residual)
    psf_map, psf_header = _plane(psf)
    if residual_map.shape != restored_map.shape:
        raise InputFileError(f"{residual}: shape {residual_map.shape} is not the restored map's "
                             f"{restored_map.shape}")
    beam = beam_of(header, source=restored)
    for path, image_header in ((restored, header), (residual, residual_header)):
        if str(image_header.get("BUNIT", "")).upper() != "JY/BEAM":
            raise InputFileError(f"{path}: BUNIT must be JY/BEAM, got {image_header.get('BUNIT')!r}")
    rms_mjy = float(np.std(residual_map)) * 1e3

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.4))
    extent = _offsets_arcmin(header, restored_map.shape)
    corner = (extent[0] - np.sign(extent[0]) * 1.5 * beam[0] / 60.0, extent[2] + 1.5 * beam[0] / 60.0)
    ax = axes[0]
    data = restored_map * 1e3
    norm = ImageNormalize(data, interval=PercentileInterval(99.8), stretch=AsinhStretch(0.05))
    shown = ax.imshow(data, origin="lower", cmap="inferno", norm=norm, extent=extent)
    fig.colorbar(shown, ax=ax, label="mJy/beam")
    ax.add_patch(_beam_ellipse(beam, corner, color="cyan", lw=1.2))
    ax.set_title("restored map")
    ax = axes[1]
    data = residual_map * 1e3
    limit = 5.0 * rms_mjy if rms_mjy > 0 else 1.0
    shown = ax.imshow(data, origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit, extent=extent)
    fig.colorbar(shown, ax=ax, label="mJy/beam")
    ax.add_patch(_beam_ellipse(beam, corner, color="k", lw=1.2))
    ax.set_title(f"residual map, rms {rms_mjy * 1e3:.1f} µJy/beam (colours ±5 rms)", fontsize=10)
    ax = axes[2]
    half = int(np.ceil(PSF_HALF_WIDTH_BEAMS * beam[0] / (abs(float(psf_header["CDELT2"])) * 3600.0)))
    cy, cx = psf_map.shape[0] // 2, psf_map.shape[1] // 2
    half = min(half, cy, cx)
    cut = psf_map[cy - half:cy + half + 1, cx - half:cx + half + 1]
    scale = abs(float(psf_header["CDELT2"])) * 60.0
    east_sign = -np.sign(float(psf_header["CDELT1"]))
    psf_extent = ((-half - 0.5) * scale * east_sign, (half + 0.5) * scale * east_sign,
                  (-half - 0.5) * scale, (half + 0.5) * scale)
    shown = ax.imshow(cut, origin="lower", cmap="viridis", vmin=float(cut.min()), vmax=1.0, extent=psf_extent)
    fig.colorbar(shown, ax=ax, label="PSF response (peak 1)")
    ax.add_patch(_beam_ellipse(beam, (0.0, 0.0), color="w", lw=1.2, ls="--"))
    ax.set_title(f"PSF, restoring beam {beam[0]:.1f}\" x {beam[1]:.1f}\", PA {beam[2]:.0f}°")
    for ax in axes:
        ax.set(xlabel="ΔRA cos δ [arcmin]", ylabel="ΔDec [arcmin]")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, output, dpi=110)
    plt.close(fig)
