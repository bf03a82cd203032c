"""Component classes: abstract fields and the field-order check run when a class is defined."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import pytest
from jaxtyping import Array, Float, PRNGKeyArray

from ssvae_core.plugin import (
    AbstractChannelPrior,
    AbstractDecoder,
    AbstractEncoder,
    AbstractHead,
    AbstractLossTerm,
    AbstractPrior,
    EncoderOutput,
    Schedule,
    uniform_log_weights,
)

HERE = Path(__file__).resolve()


def _line_of(text: str) -> int:
    """The line of this file that contains ``text`` (the class statement a message names)."""
    lines = HERE.read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)


def test_a_field_without_default_after_a_default_is_reported_with_file_and_line() -> None:
    with pytest.raises(TypeError) as caught:

        class DefaultFirstPrior(AbstractChannelPrior):
            num_components: int = eqx.field(static=True)
            conditions_decoder: bool = eqx.field(static=True, default=True)
            means: Float[Array, "K D"]
            log_vars: Float[Array, "K D"]

    message = str(caught.value)
    assert message.startswith(
        "test_a_field_without_default_after_a_default_is_reported_with_file_and_line"
        f".<locals>.DefaultFirstPrior ({HERE}, line {_line_of('class DefaultFirstPrior(')}): "
    )
    assert "fields 'means', 'log_vars' without a default follow 'conditions_decoder'" in message
    assert "declare the fields without defaults first" in message
    # The check runs before dataclasses, whose own message names neither file nor class.
    assert "non-default argument" not in message


def test_a_default_inherited_from_a_base_class_is_named() -> None:
    class Base(AbstractChannelPrior):
        num_components: int = eqx.field(static=True)
        conditions_decoder: bool = eqx.field(static=True, default=True)

    with pytest.raises(
        TypeError,
        match=r"field 'means' without a default follows "
        r"'conditions_decoder' \(inherited from .*Base\)",
    ):

        class Child(Base):
            means: Float[Array, "K D"]


@pytest.mark.parametrize(
    "protocol", [AbstractEncoder, AbstractDecoder, AbstractPrior, AbstractHead, AbstractLossTerm]
)
def test_every_protocol_checks_its_subclasses(protocol: type) -> None:
    namespace = {
        "__module__": __name__,
        "__annotations__": {"scale": "float", "weights": "Float[Array, ' K']"},
        "scale": eqx.field(static=True, default=1.0),
    }
    with pytest.raises(
        TypeError, match=r"Broken .*field 'weights' without a default follows 'scale'"
    ):
        type("Broken", (protocol,), namespace)


class _Methods(AbstractChannelPrior):
    """A prior's methods without fields, so that the tests below declare only fields."""

    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        return jnp.zeros((posterior.z_mean.shape[0], self.num_components))

    def log_weights(self) -> Float[Array, " K"]:
        return uniform_log_weights(self.num_components)

    def sample(self, num_samples, *, encoder, key):  # type: ignore[no-untyped-def]
        return jnp.zeros((num_samples, 2)), jnp.zeros((num_samples,), dtype=jnp.int32)

    def regularisers(self) -> dict[str, Float[Array, ""]]:
        return {}

    def parameter_scales(self) -> dict[str, float]:
        return {}


def test_an_own_init_frees_the_field_order() -> None:
    class OwnInitPrior(_Methods):
        num_components: int = eqx.field(static=True)
        conditions_decoder: bool = eqx.field(static=True, default=True)
        means: Float[Array, "K D"]

        def __init__(self, means: Float[Array, "K D"]):
            self.num_components = means.shape[0]
            self.means = means

    assert OwnInitPrior(jnp.zeros((3, 2))).conditions_decoder is True


def test_keyword_only_fields_do_not_count() -> None:
    class KeywordPrior(_Methods):
        num_components: int = eqx.field(static=True)
        conditions_decoder: bool = eqx.field(static=True, default=True)
        means: Float[Array, "K D"] = eqx.field(kw_only=True)

    assert KeywordPrior(3, means=jnp.zeros((3, 2))).num_components == 3


def test_a_constant_abstract_field_can_be_a_class_variable_or_a_last_default() -> None:
    class Constants(_Methods):
        means: Float[Array, "K D"]
        num_components: ClassVar[int] = 3
        conditions_decoder: bool = eqx.field(static=True, default=True)

    prior = Constants(jnp.zeros((3, 2)))
    assert (prior.num_components, prior.conditions_decoder) == (3, True)
    assert [field.name for field in dataclasses.fields(prior)] == ["means", "conditions_decoder"]


def test_abstract_fields_are_abstract() -> None:
    # The protocols' AbstractVar fields are not dataclass fields of the protocol ...
    assert dataclasses.fields(AbstractPrior) == ()

    # ... and a component that leaves one unset cannot be built.
    class Forgetful(_Methods):
        num_components: int = eqx.field(static=True)

    with pytest.raises(TypeError, match=r"abstract attributes.*conditions_decoder"):
        Forgetful(2)


def test_loss_terms_are_checked_too() -> None:
    with pytest.raises(TypeError, match=r"field 'threshold' without a default follows 'scale'"):

        class Term(AbstractLossTerm):
            weight: Schedule
            scale: float = eqx.field(static=True, default=1.0)
            threshold: Float[Array, ""]
