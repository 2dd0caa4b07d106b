"""FITS export of generated images with a celestial WCS and beam keywords.

Each image gets a SIN-projected WCS centred at a configurable position
(:mod:`radiogen.fits_header`: ``astropy.wcs.WCS.to_header()`` plus beam,
unit and frequency cards; by default also the FREQ and STOKES axes of radio
images), so radio tools (PyBDSF, CASA, DS9) read the pixel scale, beam and
units from the header.  LoTSS samples are written in Jy/beam (scaled image
times the stored peak flux); FIRST samples have no flux scale (the Griese et
al. 2023 images are pre-normalised) and keep their [0, 1] values.

Two layouts: ``images`` writes one file per image (``sample_000123.fits``);
``multi_extension`` writes one file per block of ``images_per_file`` images
(``samples_000000-000999.fits``: an empty primary HDU with the set's
provenance, then one image HDU per sample, ``EXTNAME = SAMPLE_000123``), since
tens of thousands of small files burden shared cluster file systems.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from astropy.io import fits

from radiogen.config import section_defaults
from radiogen.errors import ConfigError, InputFileError
from radiogen.fits_header import as_fits_data, image_header
from radiogen.io import atomic_path, open_hdf5, require_datasets
from radiogen.surveys import SURVEYS

__all__ = ["LAYOUTS", "export_fits"]

log = logging.getLogger(__name__)

#: Ways to lay the images out in files (see the module docstring).
LAYOUTS = ("images", "multi_extension")
#: ``sample.fits`` defaults (the schema is their only source).
_DEFAULTS = section_defaults("sample.fits")


def _set_cards(attrs: dict) -> list[tuple]:
    """Provenance of the whole set: model, guidance, seed."""
    return [
        ("MODELID", str(attrs.get("model_id", ""))[:16], "sha256 prefix of model.pt"),
        ("GUIDANCE", float(attrs.get("guidance", 0.0)), "classifier-free guidance w"),
        ("SEED", int(attrs.get("seed", 0)), "global seed of the sample set"),
    ]


def export_fits(
    samples: str | Path,
    output_dir: str | Path,
    *,
    ra_deg: float = _DEFAULTS["ra_deg"],
    dec_deg: float = _DEFAULTS["dec_deg"],
    max_images: int | None = None,
    layout: str = _DEFAULTS["layout"],
    images_per_file: int = _DEFAULTS["images_per_file"],
    freq_stokes_axes: bool = _DEFAULTS["freq_stokes_axes"],
) -> list[Path]:
    """Write the first ``max_images`` images of a samples HDF5 file as FITS.

    Parameters
    ----------
    samples : str or Path
        ``samples.h5`` of a generated set.
    output_dir : str or Path
        Directory of the FITS files (created).
    ra_deg, dec_deg : float, keyword-only
        ICRS position of every image centre, degrees.
    max_images : int or None, keyword-only
        Export at most this many images (None: all).
    layout : {"images", "multi_extension"}, keyword-only
        One file per image, or one multi-extension file per ``images_per_file`` images.
    freq_stokes_axes : bool, keyword-only
        Give each image FREQ and STOKES axes of length 1 (shape 1 x 1 x ny x nx).

    Returns
    -------
    list of Path
        The files written.  Each image header records the model id, guidance,
        seed, the image index and (LoTSS) the conditioning peak flux (and size,
        ``SRCSIZE``, for a size-conditioned model) or (FIRST) the class.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"sample.fits.layout must be one of {LAYOUTS}, got {layout!r}")
    if int(images_per_file) < 1:
        raise ConfigError(f"sample.fits.images_per_file must be >= 1, got {images_per_file}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with open_hdf5(samples) as h5:
        require_datasets(h5, ["images", "index"])
        attrs = dict(h5.attrs)
        dataset = attrs.get("dataset")
        if dataset not in ("lotss", "first"):
            raise InputFileError(f"{samples}: attribute dataset={dataset!r}, expected lotss or first")
        require_datasets(h5, ["peak_flux"] if dataset == "lotss" else ["label"])
        n = h5["images"].shape[0] if max_images is None else min(int(max_images), h5["images"].shape[0])
        class_names = json.loads(attrs["class_names"]) if "class_names" in attrs else None

        def hdu(k: int, kind):
            """Image ``k`` as an HDU of ``kind`` with its full header."""
            image = np.asarray(h5["images"][k], dtype=np.float32)
            header = image_header(
                image.shape,
                pixel_scale_arcsec=float(attrs["pixel_scale_arcsec"]),
                beam_arcsec=float(attrs["beam_arcsec"]),
                frequency_hz=float(attrs["frequency_hz"]),
                bandwidth_hz=SURVEYS[dataset].bandwidth_hz,
                ra_deg=ra_deg,
                dec_deg=dec_deg,
                bunit="JY/BEAM" if dataset == "lotss" else "",
                freq_stokes_axes=freq_stokes_axes,
            )
            if dataset == "lotss":
                peak = float(h5["peak_flux"][k])
                image = image * peak
                header["PEAKFLUX"] = (peak, "[Jy/beam] conditioning peak flux")
                if "size" in h5:
                    header["SRCSIZE"] = (float(h5["size"][k]), "[arcsec] conditioning source size")
            else:
                label = int(h5["label"][k])
                header["CLASS"] = (class_names[label] if class_names else str(label), "conditioning class")
                header["COMMENT"] = "min-max scaled intensity in [0, 1]: FIRST samples have no flux scale"
            for card in _set_cards(attrs):
                header[card[0]] = card[1:]
            index = int(h5["index"][k])
            header["IMGINDEX"] = (index, "index of the image in its sample set")
            if kind is fits.ImageHDU:
                header["EXTNAME"] = f"SAMPLE_{index:06d}"
            return kind(data=as_fits_data(image, header), header=header), index

        if layout == "images":
            for k in range(n):
                image_hdu, index = hdu(k, fits.PrimaryHDU)
                path = output_dir / f"sample_{index:06d}.fits"
                with atomic_path(path) as tmp:
                    image_hdu.writeto(tmp, overwrite=True)
                written.append(path)
        else:
            for start in range(0, n, int(images_per_file)):
                stop = min(start + int(images_per_file), n)
                primary = fits.PrimaryHDU()
                for card in _set_cards(attrs):
                    primary.header[card[0]] = card[1:]
                primary.header["NIMAGES"] = (stop - start, "image extensions in this file")
                hdus = [primary]
                indices = []
                for k in range(start, stop):
                    image_hdu, index = hdu(k, fits.ImageHDU)
                    hdus.append(image_hdu)
                    indices.append(index)
                path = output_dir / f"samples_{indices[0]:06d}-{indices[-1]:06d}.fits"
                with atomic_path(path) as tmp:
                    fits.HDUList(hdus).writeto(tmp, overwrite=True)
                written.append(path)
    log.info("wrote %d images in %d FITS file(s) (%s) to %s", n, len(written), layout, output_dir)
    return written
