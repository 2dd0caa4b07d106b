"""Are the interferometer's tools installed?  Asked once, when a workflow starts.

WSClean (a system program: Debian's ``wsclean``, not on conda-forge), python-casacore
and casacore's measures data are needed only by the ``skymap_interferometer_*`` jobs,
which run after the models are trained; without this check a missing tool is found
an hour into a run.
"""

from __future__ import annotations

from radiogen.errors import InputFileError

__all__ = ["check_tools"]

_HOW = "or set skymap.interferometer.enabled: false to leave the interferometer out"


def check_tools(*, python_packages: bool = True) -> None:
    """Raise :class:`InputFileError` naming the first missing tool and how to get it.

    Checks, in order: ``wsclean`` on PATH, ``import casacore``, and the measures data
    that UVW computation needs.

    Parameters
    ----------
    python_packages : bool, optional
        Also check python-casacore and its measures data in this Python.  False when
        the jobs run in their own conda environments (``--software-deployment-method
        conda``): ``envs/interferometer.yaml`` installs python-casacore there, and this
        process's environment need not have it; WSClean, a system program, is checked
        either way.
    """
    from radiogen.interferometer.measurement_set import check_measures_data
    from radiogen.interferometer.wsclean import wsclean_executable

    try:
        wsclean_executable()
        if not python_packages:
            return
        try:
            import casacore.tables  # noqa: F401  (python-casacore, requirements-lock.txt)
        except ImportError as err:
            raise InputFileError(f"python-casacore is not importable ({err})") from err
        check_measures_data()
    except InputFileError as err:
        raise InputFileError(f"skymap.interferometer.enabled is true, but {err}; {_HOW}") from err
