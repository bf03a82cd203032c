"""The ``process_hygiene`` check, for components of every kind.

Importing a plugin and building its components must leave the process-wide state alone
(``ssvae_core.modelling.hygiene``): the kit re-imports the modules that define the component
(the plugin's whole package, for a plugin outside the core) and rebuilds it, each time
recording what changed and putting it back.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from ssvae_core.modelling.components import KINDS, ComponentFactory
from ssvae_core.modelling.hygiene import process_changes
from ssvae_core.testing._runner import check, expect
from ssvae_core.testing._subjects import Subject

CORE_PACKAGE = "ssvae_core"
INVARIANT = (
    "importing the component's modules and building it change no process-wide state: "
    "JAX's configuration (x64, default device, matmul precision, debug flags), NumPy's and "
    "Python's global random state, environment variables"
)
HINT = (
    "jax.config.update, np.random.seed or os.environ[...] at module level or in the factory; "
    "such settings belong in the user's own scripts, never in a plugin"
)


def defining_modules(factory: ComponentFactory) -> list[str]:
    """The modules that define the factory's build, component type and options; for a
    plugin outside the core, every loaded module of its package."""
    names = {
        getattr(thing, "__module__", None)
        for thing in (factory.build, factory.component_type, factory.options)
    }
    names = {name for name in names if name and name in sys.modules and name != "__main__"}
    for name in list(names):
        package = name.split(".")[0]
        if package != CORE_PACKAGE:
            names |= {m for m in sys.modules if m == package or m.startswith(package + ".")}
    return sorted(names, key=lambda name: (name.count("."), name))


def reimport(names: list[str]) -> list[str]:
    """Execute the modules ``names`` afresh (from their specs, so that modules loaded from a
    path, as pytest loads test files, work too), then put the modules already loaded back in
    place (so that classes keep their identity for everything else in the process).
    Returns the names of those that have no loader to execute them again."""
    saved: dict[str, ModuleType] = {name: sys.modules.pop(name) for name in names}
    skipped = []
    try:
        for name in names:
            if name in sys.modules:  # imported again by a package executed before it
                continue
            spec = getattr(saved[name], "__spec__", None)
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                skipped.append(name)
                continue
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
    finally:
        sys.modules.update(saved)
    return skipped


def rebuild(subject: Subject) -> None:
    """Prepare the subject once more (the component is built as in ``build_model``)."""
    type(subject)(subject.label, subject.factory, subject.options, subject.settings)


def _process_hygiene(subject: Subject) -> str:
    names = defining_modules(subject.factory)
    with process_changes() as changes:
        skipped = reimport(names)
    expect(
        not changes,
        f"importing {', '.join(names)} changed process-wide state: {'; '.join(changes)}",
    )
    build_changes = subject.build_changes
    if build_changes is None:
        with process_changes() as build_changes:
            rebuild(subject)
    expect(
        not build_changes,
        f"building the component changed process-wide state: {'; '.join(build_changes)}",
    )
    executed = [name for name in names if name not in skipped]
    return f"re-imported {', '.join(executed)}" if executed else "built"


def register_hygiene_checks() -> None:
    """Add ``process_hygiene`` as the last check of every kind."""
    for kind in KINDS:
        check(kind, "process_hygiene", INVARIANT, hint=HINT)(_process_hygiene)
