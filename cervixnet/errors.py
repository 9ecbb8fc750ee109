"""Exceptions that carry a message meant for the user, not a traceback."""

from pathlib import Path


class CervixnetError(Exception):
    """Base class: the command line prints the message and exits non-zero."""


class ConfigError(CervixnetError, ValueError):
    """A configuration file or value is invalid; the message names the file and key."""


class DataError(CervixnetError, ValueError):
    """A data set is invalid; the message names the file, row and column."""


class TrainingError(CervixnetError, RuntimeError):
    """Training could not go on (e.g. the loss became NaN); the message says what was kept."""


def check_output_folder(path: str | Path) -> Path:
    """Returns ``path`` if it is free to write into: absent, or an empty folder.

    Raises:
        ConfigError: ``path`` is a file or a folder with something in it, so that no earlier
            result is ever overwritten.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(
            f"--out {path}: exists and is not an empty folder; choose a new folder so that "
            "nothing is overwritten"
        )
    return path
