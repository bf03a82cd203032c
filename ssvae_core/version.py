"""The version of ssvae-core, written once: the build reads it from here."""

__version__ = "0.2.0"
"""The version of ssvae-core (semantic versioning; see the changelog)."""
