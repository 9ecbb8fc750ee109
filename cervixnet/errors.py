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


class UnsafeModelError(ConfigError):
    """A model file holds Python code that would run on load; refused unless ``unsafe``."""


def inside_folder(folder: str | Path, name: str | Path) -> Path:
    """``folder / name``, refusing a ``name`` that would put a file outside ``folder``.

    Output files named after user data (an image's file name, from a manifest or the command
    line) are written through this, so that an absolute path, a ``..`` part or a symbolic link
    in ``folder`` cannot send a write anywhere else.

    Raises:
        DataError: ``name`` is absolute, has a ``..`` part, or resolves outside ``folder``.
    """
    folder, relative = Path(folder), Path(name)
    path = folder / relative
    if (
        relative.is_absolute()
        or ".." in relative.parts
        or not path.resolve().is_relative_to(folder.resolve())
    ):
        raise DataError(
            f"{name}: refused to write this output file, it would land outside {folder}"
        )
    return path
