"""Exceptions that carry a message meant for the user, not a traceback."""


class CervixnetError(Exception):
    """Base class: the command line prints the message and exits non-zero."""


class ConfigError(CervixnetError, ValueError):
    """A configuration file or value is invalid; the message names the file and key."""


class DataError(CervixnetError, ValueError):
    """A data set is invalid; the message names the file, row and column."""
