"""FITS export of generated images with a celestial WCS and beam keywords.

Each image becomes one 2-D primary HDU on a SIN projection centred at a
configurable position, so radio tools (PyBDSF, CASA, DS9) read the pixel
scale, beam and units from the header.  LoTSS samples are written in Jy/beam
(scaled image times the stored peak flux); FIRST samples have no flux scale
(the Griese et al. 2023 images are pre-normalised) and keep their [0, 1] values.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from astropy.io import fits

from radiogen.errors import InputFileError
from radiogen.io import atomic_path, open_hdf5, require_datasets

__all__ = ["image_header", "export_fits"]

log = logging.getLogger(__name__)


def image_header(
    shape: tuple[int, int],
    *,
    pixel_scale_arcsec: float,
    beam_arcsec: float,
    frequency_hz: float,
    ra_deg: float,
    dec_deg: float,
    bunit: str,
) -> fits.Header:
    """Header of one (ny, nx) image: RA---SIN/DEC--SIN, reference at the image centre.

    BMAJ, BMIN and CDELT are in degrees (FITS standard); BPA 0 (circular beam).
    """
    ny, nx = shape
    scale = pixel_scale_arcsec / 3600.0
    header = fits.Header()
    header["BUNIT"] = (bunit, "pixel unit")
    header["CTYPE1"], header["CTYPE2"] = "RA---SIN", "DEC--SIN"
    header["CUNIT1"], header["CUNIT2"] = "deg", "deg"
    header["CRPIX1"], header["CRPIX2"] = (nx + 1) / 2.0, (ny + 1) / 2.0
    header["CRVAL1"], header["CRVAL2"] = float(ra_deg), float(dec_deg)
    header["CDELT1"], header["CDELT2"] = -scale, scale
    header["RADESYS"], header["EQUINOX"] = "ICRS", 2000.0
    header["BMAJ"] = (beam_arcsec / 3600.0, "beam major axis FWHM [deg]")
    header["BMIN"] = (beam_arcsec / 3600.0, "beam minor axis FWHM [deg]")
    header["BPA"] = (0.0, "beam position angle [deg]")
    header["RESTFRQ"] = (float(frequency_hz), "[Hz]")
    header["ORIGIN"] = "radiogen"
    return header


def export_fits(
    samples: str | Path,
    output_dir: str | Path,
    *,
    ra_deg: float = 180.0,
    dec_deg: float = 45.0,
    max_images: int | None = None,
) -> list[Path]:
    """Write the first ``max_images`` images of a samples HDF5 file as FITS.

    Files are ``output_dir/sample_{index:06d}.fits``; the header records the
    model id, guidance, seed and (LoTSS) the conditioning peak flux.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with open_hdf5(samples) as h5:
        require_datasets(h5, ["images", "index"])
        attrs = dict(h5.attrs)
        dataset = attrs.get("dataset")
        if dataset not in ("lotss", "first"):
            raise InputFileError(f"{samples}: attribute dataset={dataset!r}, expected lotss or first")
        if dataset == "lotss":
            require_datasets(h5, ["peak_flux"])
        n = h5["images"].shape[0] if max_images is None else min(int(max_images), h5["images"].shape[0])
        class_names = json.loads(attrs["class_names"]) if "class_names" in attrs else None
        for k in range(n):
            image = np.asarray(h5["images"][k], dtype=np.float32)
            header = image_header(
                image.shape,
                pixel_scale_arcsec=float(attrs["pixel_scale_arcsec"]),
                beam_arcsec=float(attrs["beam_arcsec"]),
                frequency_hz=float(attrs["frequency_hz"]),
                ra_deg=ra_deg,
                dec_deg=dec_deg,
                bunit="JY/BEAM" if dataset == "lotss" else "",
            )
            if dataset == "lotss":
                peak = float(h5["peak_flux"][k])
                image = image * peak
                header["PEAKFLUX"] = (peak, "conditioning peak flux [Jy/beam]")
            else:
                label = int(h5["label"][k])
                header["CLASS"] = (class_names[label] if class_names else str(label), "conditioning class")
                header["COMMENT"] = "min-max scaled intensity in [0, 1]: FIRST samples have no flux scale"
            header["MODELID"] = (str(attrs.get("model_id", ""))[:16], "sha256 prefix of model.pt")
            header["GUIDANCE"] = (float(attrs.get("guidance", 0.0)), "classifier-free guidance w")
            header["SEED"] = int(attrs.get("seed", 0))
            header["IMGINDEX"] = int(h5["index"][k])
            path = output_dir / f"sample_{int(h5['index'][k]):06d}.fits"
            with atomic_path(path) as tmp:
                fits.PrimaryHDU(data=image, header=header).writeto(tmp, overwrite=True)
            written.append(path)
    log.info("wrote %d FITS images to %s", len(written), output_dir)
    return written
