"""Channel blocks of one observation: what each measurement set is, and checks that sets belong together.

With ``skymap.interferometer.channel_blocks`` = K the band's ``channels`` are
split into K blocks of equal size; block b holds channels [b c/K, (b+1) c/K)
(:meth:`~radiogen.interferometer.settings.InterferometerSettings.block_channels`)
as its own measurement set, with the rows, stations, times and UVW of every
other block.  Each block's set carries a table keyword, :data:`TAG_KEYWORD`, a
JSON record of the observation's settings, the global seed, its block and
channels, the phase centre and the SHA-256 of the sky model predicted into it,
and (once its noise is added) the noise sigma with the image weighting it was
calibrated for.  The jobs that take several blocks, or a block and the noise
calibration, compare these records before any work, so that sets of another
configuration, another field or sky, a missing or doubled block, or noise of
another calibration are refused with the file's name.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Mapping, Sequence

from radiogen.errors import InputFileError
from radiogen.interferometer.settings import OBSERVATION_KEYS, WEIGHTING_KEYS, InterferometerSettings

__all__ = ["TAG_KEYWORD", "observation_record", "weighting_record", "same_phase_centre", "block_tag", "write_tag",
           "read_tag", "check_block", "check_blocks", "check_calibration"]

#: Keyword of the main table holding a block's record (JSON text).
TAG_KEYWORD = "RADIOGEN_BLOCK"


def observation_record(settings: InterferometerSettings) -> dict:
    """The settings that determine the visibilities (``OBSERVATION_KEYS``), as plain JSON values."""
    record = json.loads(json.dumps(asdict(settings)))
    return {key: record[key] for key in OBSERVATION_KEYS}


def weighting_record(settings: InterferometerSettings) -> dict:
    """The image weighting (``WEIGHTING_KEYS``) that the noise is calibrated for."""
    if settings.robust is None:
        raise ValueError("these interferometer settings (stage observation) hold no image weighting")
    return {key: getattr(settings, key) for key in WEIGHTING_KEYS}


def same_phase_centre(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two (RA, Dec) phase centres (deg) agree to 1e-9 deg, RA across 0/360 included.

    Each block job derives the centre from the map header through WCS on its own
    node; the last bits may differ between CPUs, the field may not.
    """
    d_ra = (float(a[0]) - float(b[0]) + 180.0) % 360.0 - 180.0
    return abs(d_ra) <= 1e-9 and abs(float(a[1]) - float(b[1])) <= 1e-9


def block_tag(settings: InterferometerSettings, *, block: int, seed: int, phase_centre_deg: Sequence[float],
              sky_model_sha256: str) -> dict:
    """The record of predicted channel block ``block``: unit noise in DATA, so ``noise_sigma_jy``, the
    ``weighting`` and the image grid (``noise_grid``: size px, arcsec/px) it is calibrated for are None
    until the noise is added."""
    channels = settings.block_channels(block)
    return {"block": int(block), "channel_blocks": int(settings.channel_blocks),
            "channels": [channels.start, channels.stop], "seed": int(seed),
            "phase_centre_deg": [float(v) for v in phase_centre_deg], "sky_model_sha256": str(sky_model_sha256),
            "noise_sigma_jy": None, "weighting": None, "noise_grid": None,
            "observation": observation_record(settings)}


def write_tag(ms_path: str | Path, tag: Mapping) -> None:
    """Store ``tag`` as the :data:`TAG_KEYWORD` keyword of the measurement set's main table."""
    from casacore import tables

    with tables.table(str(ms_path), readonly=False, ack=False) as ms:
        ms.putkeyword(TAG_KEYWORD, json.dumps(dict(tag), sort_keys=True))


def read_tag(ms_path: str | Path) -> dict | None:
    """The block record of a measurement set, or None for a set without one (not built by radiogen's blocks)."""
    from casacore import tables

    path = Path(ms_path)
    if not (path / "table.dat").is_file():
        raise InputFileError(f"{path}: not a measurement set (no table.dat)")
    with tables.table(str(path), ack=False) as ms:
        if TAG_KEYWORD not in ms.keywordnames():
            return None
        return json.loads(ms.getkeyword(TAG_KEYWORD))


def check_block(ms_path: str | Path, settings: InterferometerSettings, *, seed: int | None,
                noise_added: bool) -> dict:
    """The record of one block's set, checked against the settings, the seed and the noise state."""
    path = Path(ms_path)
    tag = read_tag(path)
    if tag is None:
        raise InputFileError(f"{path}: a measurement set without radiogen's block record (keyword {TAG_KEYWORD}); "
                             "channel blocks come from `radiogen interferometer block`")
    if "sky_model_sha256" not in tag:
        raise InputFileError(f"{path}: a block record without phase centre and sky model (an older radiogen); "
                             "rebuild the blocks")
    if tag["observation"] != observation_record(settings) or tag["channel_blocks"] != settings.channel_blocks:
        expected = observation_record(settings)
        changed = sorted(k for k in set(expected) | set(tag["observation"])
                         if tag["observation"].get(k) != expected.get(k))
        raise InputFileError(f"{path}: built with other skymap.interferometer settings "
                             f"({', '.join(changed) or 'channel_blocks'} differ); rebuild the blocks")
    if seed is not None and tag["seed"] != seed:
        raise InputFileError(f"{path}: its noise was drawn with seed {tag['seed']}, not {seed}")
    if noise_added != (tag["noise_sigma_jy"] is not None):
        state = "already has its thermal noise" if tag["noise_sigma_jy"] is not None else "holds unit noise only"
        raise InputFileError(f"{path}: the measurement set {state}; expected "
                             f"{'an observed' if noise_added else 'a predicted'} block")
    return tag


def check_blocks(ms_paths: Sequence[str | Path], settings: InterferometerSettings, *, seed: int | None,
                 noise_added: bool, phase_centre_deg: Sequence[float] | None = None,
                 image_grid: tuple[int, float] | None = None) -> list[dict]:
    """Records of ``ms_paths``, checked to be every channel block of one observation, once each.

    ``noise_added``: the sets must hold calibrated noise (all of the same
    sigma and weighting), or must hold unit noise (before the calibration).
    ``seed`` None accepts any seed shared by all.  All blocks must hold one sky
    model at one phase centre; ``phase_centre_deg`` (RA, Dec: the map header's
    centre) must be it.  ``image_grid`` (size px, arcsec/px of the image to
    make): the blocks' noise must have been calibrated for it and for the
    weighting of ``settings`` (Briggs weights depend on the uv cells, so on the
    grid as well as on robust, taper and uv cut).

    Raises
    ------
    InputFileError
        Naming the set that is of other settings, another field, sky, seed or
        noise, or the blocks missing or given twice.
    """
    paths = [Path(p) for p in ms_paths]
    tags = [check_block(p, settings, seed=seed, noise_added=noise_added) for p in paths]
    blocks = sorted(t["block"] for t in tags)
    if blocks != list(range(settings.channel_blocks)):
        raise InputFileError(f"{', '.join(map(str, paths))}: channel blocks {blocks}, expected each of 0 to "
                             f"{settings.channel_blocks - 1} once (skymap.interferometer.channel_blocks "
                             f"{settings.channel_blocks})")
    for path, tag in zip(paths, tags):
        if tag["sky_model_sha256"] != tags[0]["sky_model_sha256"] or not same_phase_centre(
                tag["phase_centre_deg"], tags[0]["phase_centre_deg"]):
            raise InputFileError(f"{path}: predicted from another sky model or phase centre than {paths[0]} "
                                 f"({tag['phase_centre_deg']} vs {tags[0]['phase_centre_deg']} deg)")
        if (tag["seed"], tag["noise_sigma_jy"], tag["weighting"], tag["noise_grid"]) != (
                tags[0]["seed"], tags[0]["noise_sigma_jy"], tags[0]["weighting"], tags[0]["noise_grid"]):
            raise InputFileError(f"{path}: its noise (seed {tag['seed']}, sigma {tag['noise_sigma_jy']} Jy) is not "
                                 f"that of {paths[0]} (seed {tags[0]['seed']}, sigma {tags[0]['noise_sigma_jy']} Jy)")
    if phase_centre_deg is not None and not same_phase_centre(tags[0]["phase_centre_deg"], phase_centre_deg):
        raise InputFileError(f"{paths[0]}: phase centre {tags[0]['phase_centre_deg']} deg is not the map's "
                             f"centre {[float(v) for v in phase_centre_deg]} deg; rebuild the blocks for this map")
    if image_grid is not None:
        size, scale = image_grid
        weighting, (noise_size, noise_scale) = tags[0]["weighting"], tags[0]["noise_grid"]
        if weighting != weighting_record(settings) or noise_size != size or not math.isclose(
                noise_scale, scale, rel_tol=1e-9, abs_tol=1e-8):
            raise InputFileError(f"{paths[0]}: its noise was calibrated for the weighting {weighting} on a "
                                 f"{noise_size} px grid of {noise_scale:.6g} arcsec, not {weighting_record(settings)} "
                                 f"on {size} px of {scale:.6g} arcsec: the image rms would miss its target; "
                                 "calibrate the noise again")
    return tags


def check_calibration(calibration: Mapping, source: str | Path, settings: InterferometerSettings, *,
                      seed: int, block: int, tag: Mapping) -> None:
    """Refuse a noise calibration made for other settings, another seed, without ``block``, or on blocks of
    another sky or field than the block record ``tag``."""
    if calibration.get("observation") != observation_record(settings):
        raise InputFileError(f"{source}: the noise was calibrated for other skymap.interferometer settings; "
                             "calibrate again")
    if calibration.get("seed") != seed:
        raise InputFileError(f"{source}: calibrated on unit noise of seed {calibration.get('seed')}, not {seed}")
    if block not in [b["block"] for b in calibration.get("blocks", [])]:
        raise InputFileError(f"{source}: calibrated on blocks {[b['block'] for b in calibration.get('blocks', [])]}, "
                             f"not on block {block}")
    centre = calibration.get("phase_centre_deg")
    if calibration.get("sky_model_sha256") != tag["sky_model_sha256"] or centre is None or not same_phase_centre(
            centre, tag["phase_centre_deg"]):
        raise InputFileError(f"{source}: calibrated on blocks of another sky model or phase centre than block "
                             f"{block}'s; calibrate again")
