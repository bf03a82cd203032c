"""Plugin discovery: built-ins and entry points of the group ``ssvae``, through pluggy.

A plugin that fails to import, changes process-wide state when imported (JAX's
configuration, NumPy's global random state, the environment: ``ssvae_core.modelling.hygiene``),
raises in a hook, registers a name that is already taken, returns a factory that does not
satisfy its protocol, or supports other core versions than the one installed is recorded
in ``Registry.problems`` with its name and the reason; every other plugin keeps working
(``ssvae_core.compatibility`` says how a plugin states the core versions it supports).
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pluggy

from ssvae_core import builtin, hookspecs
from ssvae_core.compatibility import core_mismatch, core_version, supported_core
from ssvae_core.errors import ConfigError
from ssvae_core.modelling.components import KINDS, ComponentFactory
from ssvae_core.modelling.hygiene import describe_changes, process_changes
from ssvae_core.modelling.protocols import (
    AbstractAcquisition,
    AbstractDecoder,
    AbstractEncoder,
    AbstractHead,
    AbstractPrior,
    concrete_override,
)
from ssvae_core.modelling.terms.base import AbstractLossTerm, TermOptions
from ssvae_core.options import suggest
from ssvae_core.runs.tracking import TrackerFactory

ENTRY_POINT_GROUP = "ssvae"
CORE_PLUGIN = "ssvae_core"

PROTOCOLS: dict[str, type] = {
    "prior": AbstractPrior,
    "encoder": AbstractEncoder,
    "decoder": AbstractDecoder,
    "head": AbstractHead,
    "loss_term": AbstractLossTerm,
    "acquisition": AbstractAcquisition,
}

HOOKS = {
    "prior": "ssvae_register_priors",
    "encoder": "ssvae_register_encoders",
    "decoder": "ssvae_register_decoders",
    "head": "ssvae_register_heads",
    "loss_term": "ssvae_register_loss_terms",
    "acquisition": "ssvae_register_acquisitions",
}
# Trackers (``--track NAME``) are a plugin kind without a config table or a protocol class.
TRACKER_HOOK = "ssvae_register_trackers"

# Components shipped as separate packages, so a config naming one can say what to install.
KNOWN_PACKAGES = {
    ("prior", "vamp"): "ssvae-vamp",
    ("prior", "geometric_mog"): "ssvae-geometric",
    ("encoder", "conv"): "ssvae-conv",
    ("decoder", "conv"): "ssvae-conv",
}


@dataclass(frozen=True)
class RegisteredComponent:
    """A factory together with where it came from."""

    kind: str
    name: str
    factory: ComponentFactory
    plugin: str
    package: str
    version: str


@dataclass(frozen=True)
class RegisteredTracker:
    """A tracker's factory together with where it came from."""

    name: str
    factory: TrackerFactory
    plugin: str
    package: str
    version: str


@dataclass(frozen=True)
class PluginProblem:
    """A plugin (or one of its components) that could not be registered, and why."""

    plugin: str
    reason: str


def protocol_violation(kind: str, name: str, factory: Any, *, final: bool = True) -> str | None:
    """Why ``factory`` cannot serve as a ``kind`` component, or ``None`` if it can.

    With ``final`` (the default) a component class that overrides a concrete method is
    refused (``concrete_override``)."""
    if not isinstance(factory, ComponentFactory):
        return f"{kind} {name!r} is not a ComponentFactory (got {type(factory).__name__})"
    protocol = PROTOCOLS[kind]
    component_type = factory.component_type
    if not (inspect.isclass(component_type) and issubclass(component_type, protocol)):
        return f"{kind} {name!r} builds {component_type!r}, which is not a subclass of {protocol.__name__}"
    if inspect.isabstract(component_type):
        missing = ", ".join(sorted(getattr(component_type, "__abstractmethods__", ())))
        return f"{kind} {name!r} leaves abstract methods unimplemented: {missing}"
    override = concrete_override(component_type, protocol) if final else None
    if override is not None:
        return (
            f"{kind} {name!r}: {override}; a component fills in abstract methods only "
            "(move shared behaviour into an Abstract… base class)"
        )
    try:
        factory.default_options()
    except TypeError as error:
        return f"{kind} {name!r} options cannot be built with defaults: {error}"
    if kind == "loss_term" and not issubclass(factory.options, TermOptions):
        return (
            f"loss_term {name!r} options {factory.options.__name__} do not subclass TermOptions "
            "(every term needs 'weight' and 'warmup_steps')"
        )
    if not callable(factory.build):
        return f"{kind} {name!r} has no callable build"
    return None


class Registry:
    """Every component available in this environment, by kind and name."""

    def __init__(
        self,
        *,
        entry_points: bool = True,
        plugins: Iterable[tuple[str, Any]] = (),
        final: bool = True,
    ):
        """``final=False`` accepts component classes that override concrete methods (the
        conformance kit's seeded defects, each a correct component with one method
        changed); every other registry refuses them."""
        self.final = final
        self.manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self.components: dict[str, dict[str, RegisteredComponent]] = {kind: {} for kind in KINDS}
        self.trackers: dict[str, RegisteredTracker] = {}
        self.problems: list[PluginProblem] = []
        self._origin: dict[str, tuple[str, str]] = {}
        self.register(builtin, name=CORE_PLUGIN, package="ssvae-core", version=core_version())
        if entry_points:
            self._load_entry_points()
        for name, plugin in plugins:
            self.register(plugin, name=name)

    def _load_entry_points(self) -> None:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = entry_point.dist
            package = dist.metadata["Name"] if dist is not None else entry_point.module
            version = dist.version if dist is not None else "unknown"
            try:
                with process_changes() as changes:
                    plugin = entry_point.load()
            except Exception as error:  # a broken plugin must not take the others down
                self.problems.append(
                    PluginProblem(entry_point.name, f"failed to import: {type(error).__name__}: {error}")
                )
                continue
            if changes:  # undone already; the plugin is not registered
                self.problems.append(PluginProblem(entry_point.name, describe_changes(changes)))
                continue
            self.register(
                plugin, name=entry_point.name, package=package, version=version,
                supported=supported_core(plugin, dist),
            )

    def register(
        self,
        plugin: ModuleType | object,
        *,
        name: str,
        package: str | None = None,
        version: str = "unknown",
        supported: str | None = None,
    ) -> None:
        """Register one plugin object and collect its components, recording any problem.

        ``supported`` is the core versions the plugin supports (default: its
        ``requires_core`` attribute); a plugin made for other versions is not registered.
        """
        mismatch = core_mismatch(package or name, version, supported or supported_core(plugin, None))
        if mismatch is not None:
            self.problems.append(PluginProblem(name, mismatch))
            return
        try:
            self.manager.register(plugin, name=name)
        except Exception as error:
            self.problems.append(PluginProblem(name, f"rejected by pluggy: {error}"))
            return
        self._origin[name] = (package or name, version)
        for kind, hook_name in {**HOOKS, "tracker": TRACKER_HOOK}.items():
            caller = getattr(self.manager.hook, hook_name)
            for impl in caller.get_hookimpls():
                if impl.plugin_name != name:
                    continue
                try:
                    factories = impl.function()
                except Exception as error:
                    self.problems.append(
                        PluginProblem(name, f"{hook_name}() raised {type(error).__name__}: {error}")
                    )
                    continue
                if not isinstance(factories, dict):
                    self.problems.append(
                        PluginProblem(name, f"{hook_name}() must return a dict, got {type(factories).__name__}")
                    )
                    continue
                for component_name, factory in factories.items():
                    if kind == "tracker":
                        self._add_tracker(component_name, factory, name)
                    else:
                        self._add(kind, component_name, factory, name)

    def _add_tracker(self, name: str, factory: Any, plugin: str) -> None:
        existing = self.trackers.get(name)
        if existing is not None:
            reason = f"tracker {name!r} is already registered by {existing.plugin!r}"
        elif not isinstance(factory, TrackerFactory):
            reason = f"tracker {name!r} is not a TrackerFactory (got {type(factory).__name__})"
        else:
            package, version = self._origin[plugin]
            self.trackers[name] = RegisteredTracker(name, factory, plugin, package, version)
            return
        self.problems.append(PluginProblem(plugin, reason))

    def _add(self, kind: str, name: str, factory: Any, plugin: str) -> None:
        existing = self.components[kind].get(name)
        if existing is not None:
            self.problems.append(
                PluginProblem(plugin, f"{kind} {name!r} is already registered by {existing.plugin!r}")
            )
            return
        violation = protocol_violation(kind, name, factory, final=self.final)
        if violation is not None:
            self.problems.append(PluginProblem(plugin, violation))
            return
        package, version = self._origin[plugin]
        self.components[kind][name] = RegisteredComponent(kind, name, factory, plugin, package, version)

    def names(self, kind: str) -> list[str]:
        """Registered names of one kind, sorted."""
        return sorted(self.components[kind])

    def ordered(self, kind: str) -> list[str]:
        """Registered names of one kind: the core's in registration order, then the rest
        sorted (the order in which loss terms are summed, the same in every environment)."""
        core = [n for n, c in self.components[kind].items() if c.plugin == CORE_PLUGIN]
        return core + sorted(n for n in self.components[kind] if n not in core)

    def get(self, kind: str, name: str) -> RegisteredComponent:
        """The component ``kind``/``name``; a ``ConfigError`` says what is allowed."""
        try:
            return self.components[kind][name]
        except KeyError:
            pass
        allowed = ", ".join(self.names(kind))
        package = KNOWN_PACKAGES.get((kind, name))
        if package is not None:
            raise ConfigError(
                f"{kind} {name!r} is provided by the package {package!r}, which is not installed "
                f"(pip install {package}); installed {kind}s: {allowed}"
            )
        broken = [p for p in self.problems if name in p.plugin]
        hint = f"; plugin {broken[0].plugin!r} failed: {broken[0].reason}" if broken else ""
        raise ConfigError(
            f"{kind}.name {name!r} is not registered{suggest(name, self.names(kind))}; "
            f"allowed: {allowed}{hint}"
        )

    def __iter__(self):  # type: ignore[no-untyped-def]
        for kind in KINDS:
            yield from (self.components[kind][n] for n in self.names(kind))


_DEFAULT: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry of built-ins and installed entry points (built once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Registry()
    return _DEFAULT
