"""Exception hierarchy.

Every error a user can cause (config, data, checkpoint, plugin) derives from
``SSVAEError``; the CLI turns these into one line on stderr and exit code 2.
"""

from __future__ import annotations

import os


class SSVAEError(Exception):
    """Base class of all user-facing errors raised by ssvae."""


class ConfigError(SSVAEError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class DataError(SSVAEError, ValueError):
    """Input data has the wrong shape, range, labels or format."""


class CheckpointError(SSVAEError, ValueError):
    """A checkpoint is missing, truncated, or does not match its config."""


class PluginError(SSVAEError):
    """A plugin failed to load, registered a duplicate, or violates its protocol."""


def read_user_file(
    path: str | os.PathLike[str], what: str, error: type[SSVAEError]
) -> bytes:
    """The bytes of a file the user named; a missing, directory or unreadable path is one
    ``error`` line that calls the file ``what`` (e.g. ``"config file"``)."""
    where = repr(os.fspath(path))
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise error(f"{what} {where} does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} {where} is a directory; expected a file") from None
    except PermissionError:
        raise error(f"{what} {where} cannot be read (permission denied)") from None
    except OSError as failure:
        raise error(f"{what} {where} cannot be read: {failure.strerror or failure}") from None
