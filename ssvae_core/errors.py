"""Exception hierarchy.

Every error a user can cause (config, data, checkpoint, plugin) derives from
:class:`SSVAEError`; the CLI turns these into one line on stderr and exit code 2.
"""

from __future__ import annotations


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
