"""Survey constants, in one place: pixel scale, beam, frequency, FIRST's classes.

Every module that needs a survey's default geometry reads it from here; files
and headers override these values wherever they carry their own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Survey", "LOTSS", "FIRST", "SURVEYS", "FIRST_CLASS_NAMES", "survey_attrs"]


@dataclass(frozen=True)
class Survey:
    """Image geometry of a survey's cutouts.

    Attributes
    ----------
    name : str
        ``"lotss"`` or ``"first"``.
    pixel_scale_arcsec : float
        Pixel side, arcsec.
    beam_arcsec : float
        Circular restoring-beam FWHM, arcsec.
    frequency_hz : float
        Central observing frequency, Hz.
    bandwidth_hz : float
        Width of the observed band, Hz (the FREQ axis of exported FITS images).
    """

    name: str
    pixel_scale_arcsec: float
    beam_arcsec: float
    frequency_hz: float
    bandwidth_hz: float


#: LoTSS-DR2 mosaics: 1.5"/px, 6" beam, 144 MHz, band 120-168 MHz (Shimwell et al. 2022).
LOTSS = Survey("lotss", pixel_scale_arcsec=1.5, beam_arcsec=6.0, frequency_hz=144e6, bandwidth_hz=48e6)
#: FIRST images: 1.8"/px, 5.4" beam, 1.4 GHz; 2 x 7 channels of 3 MHz around 1365 and
#: 1435 MHz (Becker, White & Helfand 1995).
FIRST = Survey("first", pixel_scale_arcsec=1.8, beam_arcsec=5.4, frequency_hz=1.4e9, bandwidth_hz=42e6)
SURVEYS = {survey.name: survey for survey in (LOTSS, FIRST)}
#: Morphological classes of the FIRST dataset (Griese et al. 2023) in label order.
FIRST_CLASS_NAMES = ("FRI", "FRII", "Compact", "Bent")


def survey_attrs(name: str) -> dict:
    """``pixel_scale_arcsec``, ``beam_arcsec``, ``frequency_hz`` of a survey, as file attributes."""
    attrs = asdict(SURVEYS[name])
    del attrs["name"], attrs["bandwidth_hz"]
    return attrs
