"""Exceptions raised for bad input; the message always names the file or item."""


class RadiogenError(Exception):
    """Base class: a user-facing error with a message that names the culprit."""


class InputFileError(RadiogenError):
    """An input file is missing, unreadable or not of the expected kind."""


class CatalogueError(RadiogenError):
    """A source catalogue lacks columns or has inconsistent rows."""


class ConfigError(RadiogenError):
    """A configuration value is invalid for the requested operation."""


class TrainingError(RadiogenError):
    """Training cannot go on: a non-finite loss, ranks that disagree, a failed worker."""
