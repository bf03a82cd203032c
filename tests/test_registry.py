"""Plugin registry: built-ins, and broken plugins recorded without taking the others down."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ssvae_core.config import config_from_dict
from ssvae_core.errors import ConfigError
from ssvae_core.hookspecs import hookimpl
from ssvae_core.modelling.components import ComponentFactory
from ssvae_core.modelling.priors.standard import StandardPrior
from ssvae_core.modelling.protocols import AbstractPrior
from ssvae_core.registry import Registry


@dataclass(frozen=True)
class _NoOptions:
    """No options."""


def _build_standard(options, context, key) -> StandardPrior:
    return StandardPrior(latent_dim=context.latent_dim)


def _factory(component_type: type) -> ComponentFactory:
    return ComponentFactory(component_type, _NoOptions, _build_standard, "test component")


class _HalfPrior(AbstractPrior):
    """Implements one abstract method of the prior protocol and leaves the rest."""

    def log_weights(self):  # type: ignore[override]
        raise NotImplementedError


class _GoodPlugin:
    @hookimpl
    def ssvae_register_priors(self) -> dict[str, ComponentFactory]:
        return {"plain": _factory(StandardPrior)}


class _RaisingPlugin:
    @hookimpl
    def ssvae_register_priors(self) -> dict[str, ComponentFactory]:
        raise RuntimeError("boom")


class _DuplicatePlugin:
    @hookimpl
    def ssvae_register_priors(self) -> dict[str, ComponentFactory]:
        return {"mixture": _factory(StandardPrior)}


class _WrongTypePlugin:
    @hookimpl
    def ssvae_register_priors(self) -> dict[str, ComponentFactory]:
        return {"wrongtype": _factory(int)}


class _AbstractPlugin:
    @hookimpl
    def ssvae_register_priors(self) -> dict[str, ComponentFactory]:
        return {"halfdone": _factory(_HalfPrior)}


class _NotADictPlugin:
    @hookimpl
    def ssvae_register_heads(self) -> list[str]:
        return ["tau2"]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(
        entry_points=False,
        plugins=[
            ("raiser", _RaisingPlugin()),
            ("dupe", _DuplicatePlugin()),
            ("wrongtype_plugin", _WrongTypePlugin()),
            ("abstract_plugin", _AbstractPlugin()),
            ("listy", _NotADictPlugin()),
            ("good", _GoodPlugin()),
        ],
    )


def _reasons(registry: Registry) -> dict[str, str]:
    return {problem.plugin: problem.reason for problem in registry.problems}


# --- built-ins -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("prior", "standard"),
        ("prior", "mixture"),
        ("encoder", "dense"),
        ("decoder", "dense"),
        ("head", "tau"),
        ("head", "softmax"),
    ],
)
def test_builtin_component_is_registered_by_the_core(kind: str, name: str) -> None:
    component = Registry(entry_points=False).get(kind, name)
    assert (component.kind, component.name, component.plugin) == (kind, name, "ssvae_core")
    assert component.package == "ssvae-core"


def test_a_registry_of_builtins_only_has_no_problems() -> None:
    assert Registry(entry_points=False).problems == []


# --- broken plugins ------------------------------------------------------------------------


def test_plugin_whose_hook_raises_is_recorded_with_the_error(registry: Registry) -> None:
    reason = _reasons(registry)["raiser"]
    assert "ssvae_register_priors() raised RuntimeError: boom" in reason


def test_plugin_registering_a_taken_name_is_recorded(registry: Registry) -> None:
    assert _reasons(registry)["dupe"] == "prior 'mixture' is already registered by 'ssvae_core'"


def test_duplicate_name_keeps_the_original_component(registry: Registry) -> None:
    assert registry.get("prior", "mixture").plugin == "ssvae_core"


def test_plugin_building_a_non_protocol_class_is_recorded(registry: Registry) -> None:
    reason = _reasons(registry)["wrongtype_plugin"]
    assert "prior 'wrongtype'" in reason and "not a subclass of AbstractPrior" in reason
    assert "wrongtype" not in registry.names("prior")


def test_plugin_with_unimplemented_abstract_methods_is_recorded(registry: Registry) -> None:
    reason = _reasons(registry)["abstract_plugin"]
    assert "prior 'halfdone' leaves abstract methods unimplemented" in reason
    assert "kl_terms" in reason and "log_weights" not in reason
    assert "halfdone" not in registry.names("prior")


def test_hook_returning_a_non_dict_is_recorded(registry: Registry) -> None:
    assert "must return a dict, got list" in _reasons(registry)["listy"]


def test_working_plugins_register_despite_broken_ones(registry: Registry) -> None:
    assert registry.get("prior", "plain").plugin == "good"
    assert {"mixture", "standard", "plain"} <= set(registry.names("prior"))
    assert registry.names("head") == ["softmax", "tau"]


def test_every_broken_plugin_is_recorded_once(registry: Registry) -> None:
    plugins = [problem.plugin for problem in registry.problems]
    assert sorted(plugins) == sorted(
        ["raiser", "dupe", "wrongtype_plugin", "abstract_plugin", "listy"]
    )


def test_asking_for_a_component_of_a_failed_plugin_names_the_failure(registry: Registry) -> None:
    with pytest.raises(ConfigError, match=r"plugin 'raiser' failed: .*boom"):
        registry.get("prior", "raiser")


# --- lookups -------------------------------------------------------------------------------


def test_uninstalled_known_plugin_names_its_package() -> None:
    with pytest.raises(
        ConfigError, match=r"provided by the package 'ssvae-vamp'.*pip install ssvae-vamp"
    ):
        Registry(entry_points=False).get("prior", "vamp")


def test_config_naming_an_uninstalled_known_plugin_names_its_package() -> None:
    with pytest.raises(ConfigError, match="ssvae-vamp"):
        config_from_dict({"prior": {"name": "vamp"}}, Registry(entry_points=False))


def test_unknown_component_lists_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match=r"allowed: mixture, standard"):
        Registry(entry_points=False).get("prior", "gaussian_blob")


def test_component_added_by_a_plugin_is_usable_in_a_config(registry: Registry) -> None:
    config = config_from_dict({"prior": {"name": "plain"}}, registry)
    assert config.prior.name == "plain"


# --- abstract or final ---------------------------------------------------------------------


class _RenamedStandard(StandardPrior):
    """A concrete prior's subclass that replaces one of its concrete methods."""

    def regularisers(self):  # type: ignore[override]
        return {}


class _OverridingPlugin:
    @hookimpl
    def ssvae_register_priors(self) -> dict[str, ComponentFactory]:
        return {"overriding": _factory(_RenamedStandard)}


def test_component_overriding_a_concrete_method_is_refused_in_one_line() -> None:
    registry = Registry(entry_points=False, plugins=[("overrider", _OverridingPlugin())])
    (problem,) = registry.problems
    assert problem.plugin == "overrider"
    assert problem.reason.startswith(
        "prior 'overriding': _RenamedStandard.regularisers overrides the concrete "
        "StandardPrior.regularisers"
    )
    assert "\n" not in problem.reason
    assert "overriding" not in registry.names("prior")


def test_every_builtin_component_fills_in_abstract_methods_only() -> None:
    from ssvae_core.modelling.protocols import concrete_override
    from ssvae_core.registry import PROTOCOLS

    overrides = {
        (c.kind, c.name): concrete_override(c.factory.component_type, PROTOCOLS[c.kind])
        for c in Registry(entry_points=False)
    }
    assert {key: why for key, why in overrides.items() if why} == {}


def test_a_term_defining_prepare_without_the_prepared_base_is_refused_at_once() -> None:
    from ssvae_core.modelling.terms import AbstractLossTerm

    with pytest.raises(TypeError, match="subclass AbstractPreparedTerm instead"):

        class _Unprepared(AbstractLossTerm):  # pyright: ignore
            def prepare(self, x, labels, num_classes):
                return {}

            def __call__(self, inputs, key):
                raise NotImplementedError


# --- supported core versions ---------------------------------------------------------------


class _FuturePlugin:
    requires_core = ">=99"

    @hookimpl
    def ssvae_register_priors(self) -> dict[str, ComponentFactory]:
        return {"future": _factory(StandardPrior)}


class _CurrentPlugin(_FuturePlugin):
    requires_core = ">=0.1"

    @hookimpl
    def ssvae_register_priors(self) -> dict[str, ComponentFactory]:
        return {"current": _factory(StandardPrior)}


def test_plugin_for_other_core_versions_is_refused_in_one_line() -> None:
    import ssvae_core

    registry = Registry(
        entry_points=False, plugins=[("future", _FuturePlugin()), ("current", _CurrentPlugin())]
    )
    (problem,) = registry.problems
    assert problem.plugin == "future"
    assert problem.reason == (
        f"future unknown supports ssvae-core >=99, but ssvae-core {ssvae_core.__version__} is "
        f"installed; install a release of future made for ssvae-core {ssvae_core.__version__}"
    )
    assert "future" not in registry.names("prior") and "current" in registry.names("prior")


def test_installed_plugin_states_its_core_range_through_its_dependency(install_plugin) -> None:
    """A distribution whose entry point loads, but whose ``ssvae-core`` requirement
    excludes the installed core: refused, with its package and version."""
    install_plugin(
        "ssvae_tiny_future",
        "from ssvae_core.plugin import hookimpl\n"
        "@hookimpl\n"
        "def ssvae_register_priors():\n"
        "    return {}\n",
        requires_core="<0.1",
    )
    reasons = _reasons(Registry())
    assert reasons["ssvae_tiny_future"].startswith(
        "ssvae-tiny-future 1.0 supports ssvae-core <0.1, but"
    )


def test_every_package_here_supports_the_core_it_ships_with() -> None:
    """Each plugin's ``ssvae-core`` range admits this core (so the repository installs)."""
    import ssvae_core

    problems = [p.reason for p in Registry().problems if "supports ssvae-core" in p.reason]
    assert problems == [], ssvae_core.__version__
