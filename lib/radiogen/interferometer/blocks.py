"""Channel blocks of one observation: what each measurement set is, and checks that sets belong together.

With ``skymap.interferometer.channel_blocks`` = K the band's ``channels`` are
split into K blocks of equal size; block b holds channels [b c/K, (b+1) c/K)
(:meth:`~radiogen.interferometer.settings.InterferometerSettings.block_channels`)
as its own measurement set, with the rows, stations, times and UVW of every
other block.  Each block's set carries a table keyword, :data:`TAG_KEYWORD`, a
JSON record of the observation's settings, the global seed, its block and
channels, and (once its noise is added) the noise sigma.  The jobs that take
several blocks, or a block and the noise calibration, compare these records
before any work, so that sets of another configuration, a missing or doubled
block, or noise of another calibration are refused with the file's name.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Mapping, Sequence

from radiogen.errors import InputFileError
from radiogen.interferometer.settings import InterferometerSettings

__all__ = ["TAG_KEYWORD", "observation_record", "block_tag", "write_tag", "read_tag", "check_block", "check_blocks",
           "check_calibration"]

#: Keyword of the main table holding a block's record (JSON text).
TAG_KEYWORD = "RADIOGEN_BLOCK"
#: Settings that change how a job runs, not the visibilities.
NOT_OBSERVATION = ("threads",)


def observation_record(settings: InterferometerSettings) -> dict:
    """The settings that determine the visibilities, as plain JSON values."""
    record = json.loads(json.dumps(asdict(settings)))
    for key in NOT_OBSERVATION:
        record.pop(key)
    return record


def block_tag(settings: InterferometerSettings, *, block: int, seed: int,
              noise_sigma_jy: float | None = None) -> dict:
    """The record of channel block ``block`` (``noise_sigma_jy`` None: unit noise in DATA, not yet scaled)."""
    channels = settings.block_channels(block)
    return {"block": int(block), "channel_blocks": int(settings.channel_blocks),
            "channels": [channels.start, channels.stop], "seed": int(seed),
            "noise_sigma_jy": None if noise_sigma_jy is None else float(noise_sigma_jy),
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
    if tag["observation"] != observation_record(settings) or tag["channel_blocks"] != settings.channel_blocks:
        changed = sorted(k for k, v in observation_record(settings).items() if tag["observation"].get(k) != v)
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
                 noise_added: bool) -> list[dict]:
    """Records of ``ms_paths``, checked to be every channel block of one observation, once each.

    ``noise_added``: the sets must hold calibrated noise (all of the same
    sigma), or must hold unit noise (before the calibration).  ``seed`` None
    accepts any seed shared by all.

    Raises
    ------
    InputFileError
        Naming the set that is of other settings, another seed or noise, or the
        blocks missing or given twice.
    """
    paths = [Path(p) for p in ms_paths]
    tags = [check_block(p, settings, seed=seed, noise_added=noise_added) for p in paths]
    blocks = sorted(t["block"] for t in tags)
    if blocks != list(range(settings.channel_blocks)):
        raise InputFileError(f"{', '.join(map(str, paths))}: channel blocks {blocks}, expected each of 0 to "
                             f"{settings.channel_blocks - 1} once (skymap.interferometer.channel_blocks "
                             f"{settings.channel_blocks})")
    for path, tag in zip(paths, tags):
        if tag["seed"] != tags[0]["seed"] or tag["noise_sigma_jy"] != tags[0]["noise_sigma_jy"]:
            raise InputFileError(f"{path}: its noise (seed {tag['seed']}, sigma {tag['noise_sigma_jy']} Jy) is not "
                                 f"that of {paths[0]} (seed {tags[0]['seed']}, sigma {tags[0]['noise_sigma_jy']} Jy)")
    return tags


def check_calibration(calibration: Mapping, source: str | Path, settings: InterferometerSettings, *,
                      seed: int, block: int) -> None:
    """Refuse a noise calibration made for other settings, another seed, or without ``block``."""
    if calibration.get("observation") != observation_record(settings):
        raise InputFileError(f"{source}: the noise was calibrated for other skymap.interferometer settings; "
                             "calibrate again")
    if calibration.get("seed") != seed:
        raise InputFileError(f"{source}: calibrated on unit noise of seed {calibration.get('seed')}, not {seed}")
    if block not in [b["block"] for b in calibration.get("blocks", [])]:
        raise InputFileError(f"{source}: calibrated on blocks {[b['block'] for b in calibration.get('blocks', [])]}, "
                             f"not on block {block}")
