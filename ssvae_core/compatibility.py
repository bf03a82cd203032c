"""Which core versions a plugin supports, and whether the installed core is one of them.

A plugin states them as the version range of its ``ssvae-core`` dependency
(``dependencies = ["ssvae-core>=0.2,<0.3"]``), or, for a plugin object registered without
a distribution, as a ``requires_core`` attribute holding a version specifier. The registry
refuses a plugin made for other versions, with one line naming both.
"""

from __future__ import annotations

import importlib.metadata

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from ssvae_core.version import __version__


def core_version() -> str:
    """The installed ssvae-core's version."""
    return __version__


def supported_core(plugin: object, dist: importlib.metadata.Distribution | None) -> str | None:
    """The core versions ``plugin`` supports, as a version specifier: its ``requires_core``
    attribute, else the range of its distribution's ``ssvae-core`` requirement; ``None``
    when it states none."""
    stated = getattr(plugin, "requires_core", None)
    if stated is not None:
        return str(stated)
    for text in (dist.requires or []) if dist is not None else []:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) == "ssvae-core" and requirement.marker is None:
            return str(requirement.specifier)
    return None


def core_mismatch(package: str, version: str, supported: str | None) -> str | None:
    """Why a plugin that supports the core versions ``supported`` cannot load into this
    core, or ``None`` if it can."""
    if not supported:
        return None
    core = core_version()
    try:
        accepted = SpecifierSet(supported).contains(core, prereleases=True)
    except InvalidSpecifier:
        return f"requires_core {supported!r} is not a version specifier (e.g. '>=0.2,<0.3')"
    if accepted:
        return None
    return (
        f"{package} {version} supports ssvae-core {supported}, but ssvae-core {core} is "
        f"installed; install a release of {package} made for ssvae-core {core}"
    )
