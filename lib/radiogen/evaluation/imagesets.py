"""Read training sets and generated sample sets through one interface.

Both kinds of file share the layout documented in the README: ``/images``
float32 (N, H, W) in [0, 1]; optional ``/peak_flux`` (N,) in Jy/beam, such
that the physical image is ``images * peak_flux``; optional ``/context``
(N, K) and ``/label`` (N,); attributes ``dataset``, ``pixel_scale_arcsec``,
``beam_arcsec``, ``frequency_hz``.  Evaluation code never needs to know
whether an image set came from the survey or from the diffusion model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from radiogen.errors import ConfigError, InputFileError
from radiogen.io import open_hdf5, require_datasets
from radiogen.surveys import SURVEYS

__all__ = ["ImageSet", "open_image_set", "DEFAULT_BEAM_ARCSEC", "DEFAULT_FREQUENCY_HZ"]

#: Restoring beam FWHM per dataset (arcsec) used when a file has no ``beam_arcsec``
#: attribute: LoTSS 6" (Shimwell et al. 2019), FIRST 5.4" (Becker et al. 1995).
DEFAULT_BEAM_ARCSEC = {name: s.beam_arcsec for name, s in SURVEYS.items()}
#: Observing frequency per dataset (Hz) used when a file has no ``frequency_hz``.
DEFAULT_FREQUENCY_HZ = {name: s.frequency_hz for name, s in SURVEYS.items()}
#: Pixel scale per dataset (arcsec/pixel) used when a file has no ``pixel_scale_arcsec``.
DEFAULT_PIXEL_SCALE_ARCSEC = {name: s.pixel_scale_arcsec for name, s in SURVEYS.items()}

#: Values this far outside [0, 1] are rejected (generated images are clamped; a
#: small tolerance absorbs float rounding in the writers).
_RANGE_TOLERANCE = 1e-3


def _attr(h5: h5py.File, name: str):
    value = h5.attrs.get(name)
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    return value


@dataclass
class ImageSet:
    """An open image set; use as a context manager or call :meth:`close`.

    Attributes
    ----------
    path : Path
        The HDF5 file.
    n_images, height, width : int
        Shape of ``/images``.
    dataset : str
        ``"lotss"`` or ``"first"`` (attribute ``dataset``).
    pixel_scale_arcsec : float
        Pixel size (arcsec/pixel).
    beam_arcsec : float
        Circular restoring-beam FWHM (arcsec); from the file, else from the
        ``beam_arcsec`` argument of :func:`open_image_set`, else the dataset default.
    frequency_hz : float
        Observing frequency (Hz).
    has_peak_flux : bool
        Whether ``/peak_flux`` (Jy/beam) exists, i.e. physical images are available.
    attrs : dict
        All file attributes (JSON strings left as strings).
    """

    path: Path
    n_images: int
    height: int
    width: int
    dataset: str
    pixel_scale_arcsec: float
    beam_arcsec: float
    frequency_hz: float
    has_peak_flux: bool
    attrs: dict = field(default_factory=dict)
    _h5: h5py.File | None = field(default=None, repr=False)

    def __enter__(self) -> "ImageSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def _check_range(self, start: int, stop: int) -> tuple[int, int]:
        start = int(start)
        stop = self.n_images if stop is None else int(stop)
        if not 0 <= start <= stop <= self.n_images:
            raise InputFileError(
                f"{self.path}: image range [{start}, {stop}) outside 0..{self.n_images}"
            )
        return start, stop

    def images(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Images ``[start, stop)`` as float32 (n, H, W) in [0, 1].

        Raises
        ------
        InputFileError
            If a value is NaN or outside [0, 1] by more than 1e-3.
        """
        start, stop = self._check_range(start, stop)
        data = np.asarray(self._h5["images"][start:stop], dtype=np.float32)
        data = data.reshape(stop - start, self.height, self.width)
        if data.size:
            lo, hi = float(np.min(data)), float(np.max(data))
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise InputFileError(f"{self.path}: /images[{start}:{stop}] contains NaN or inf")
            if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
                raise InputFileError(
                    f"{self.path}: /images[{start}:{stop}] has values in [{lo:.4g}, {hi:.4g}], "
                    "expected images scaled to [0, 1]"
                )
        return np.clip(data, 0.0, 1.0)

    def peak_flux(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Per-image peak flux (Jy/beam) for ``[start, stop)``; NaN when the set has none."""
        start, stop = self._check_range(start, stop)
        if not self.has_peak_flux:
            return np.full(stop - start, np.nan)
        return np.asarray(self._h5["peak_flux"][start:stop], dtype=np.float64)

    def physical_images(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Images in Jy/beam, ``images * peak_flux``.

        Raises
        ------
        InputFileError
            If the set has no ``/peak_flux``.
        """
        if not self.has_peak_flux:
            raise InputFileError(f"{self.path}: no /peak_flux dataset, physical images unknown")
        images = self.images(start, stop)
        return images * self.peak_flux(start, stop)[:, None, None].astype(np.float32)

    def context(self, start: int = 0, stop: int | None = None) -> np.ndarray | None:
        """``/context`` rows (n, K) or None when absent."""
        start, stop = self._check_range(start, stop)
        if "context" not in self._h5:
            return None
        return np.asarray(self._h5["context"][start:stop], dtype=np.float64)

    def labels(self, start: int = 0, stop: int | None = None) -> np.ndarray | None:
        """``/label`` (n,) int64 or None when absent."""
        start, stop = self._check_range(start, stop)
        if "label" not in self._h5:
            return None
        return np.asarray(self._h5["label"][start:stop], dtype=np.int64)

    def split(self, start: int = 0, stop: int | None = None) -> np.ndarray | None:
        """``/split`` (n,) uint8 (0 train, 1 validation) or None when absent."""
        start, stop = self._check_range(start, stop)
        if "split" not in self._h5:
            return None
        return np.asarray(self._h5["split"][start:stop], dtype=np.uint8)

    @property
    def beam_area_pixels(self) -> float:
        """Gaussian beam area in pixels, ``2 pi sigma^2 / px^2``, ``sigma = FWHM / sqrt(8 ln 2)``."""
        sigma = self.beam_arcsec / np.sqrt(8.0 * np.log(2.0))
        return float(2.0 * np.pi * sigma**2 / self.pixel_scale_arcsec**2)


def open_image_set(
    path: str | os.PathLike,
    *,
    beam_arcsec: float | dict | None = None,
    dataset: str | None = None,
) -> ImageSet:
    """Open a training or sample set written in the shared HDF5 layout.

    Parameters
    ----------
    path : path-like
        HDF5 file with ``/images`` (N, H, W) (or (N, 1, H, W)) in [0, 1].
    beam_arcsec : float or dict, optional
        Beam FWHM (arcsec) to use when the file has no ``beam_arcsec`` attribute;
        a dict maps dataset name to FWHM.  Defaults: LoTSS 6", FIRST 5.4".
    dataset : str, optional
        Dataset name when the file lacks the ``dataset`` attribute.

    Raises
    ------
    InputFileError
        Missing file, missing ``/images``, wrong shape, or unknown dataset.
    """
    path = Path(path)
    h5 = open_hdf5(path)
    try:
        require_datasets(h5, ["images"])
        shape = h5["images"].shape
        if len(shape) == 4 and shape[1] == 1:
            n, _, height, width = shape
        elif len(shape) == 3:
            n, height, width = shape
        else:
            raise InputFileError(f"{path}: /images has shape {shape}, expected (N, H, W)")
        attrs = {k: _attr(h5, k) for k in h5.attrs}
        name = attrs.get("dataset") or dataset
        if name not in DEFAULT_BEAM_ARCSEC:
            raise InputFileError(
                f"{path}: attribute 'dataset' is {name!r}, expected 'lotss' or 'first'"
            )
        if "peak_flux" in h5 and h5["peak_flux"].shape != (n,):
            raise InputFileError(
                f"{path}: /peak_flux has shape {h5['peak_flux'].shape}, expected ({n},)"
            )
        beam = attrs.get("beam_arcsec")
        if beam is None:
            if isinstance(beam_arcsec, dict):
                beam = beam_arcsec.get(name, DEFAULT_BEAM_ARCSEC[name])
            elif beam_arcsec is not None:
                beam = beam_arcsec
            else:
                beam = DEFAULT_BEAM_ARCSEC[name]
        beam = float(beam)
        if not beam > 0:
            raise ConfigError(f"{path}: beam FWHM must be positive, got {beam}")
        pixel_scale = float(attrs.get("pixel_scale_arcsec") or DEFAULT_PIXEL_SCALE_ARCSEC[name])
        frequency = float(attrs.get("frequency_hz") or DEFAULT_FREQUENCY_HZ[name])
        return ImageSet(
            path=path,
            n_images=int(n),
            height=int(height),
            width=int(width),
            dataset=name,
            pixel_scale_arcsec=pixel_scale,
            beam_arcsec=beam,
            frequency_hz=frequency,
            has_peak_flux="peak_flux" in h5,
            attrs=attrs,
            _h5=h5,
        )
    except BaseException:
        h5.close()
        raise


def class_names(image_set: ImageSet) -> list[str] | None:
    """FIRST class names from the ``class_names`` JSON attribute, or None."""
    raw = image_set.attrs.get("class_names")
    if raw is None:
        return None
    return list(json.loads(raw)) if isinstance(raw, str) else [str(v) for v in raw]
