"""Extension points: the abstract modules every encoder, decoder, prior and head implements.

Each class is abstract in the Equinox sense (``AbstractVar`` fields, abstract methods);
implementations are final classes that fill in every field and method and override nothing.
Networks work on a single example and are ``vmap``-ed by the model; priors and heads see
the whole batch, but must return per-example values so that no example's loss depends on
another's.

Defining a subclass checks its field order at once (``check_field_order``): a field
without a default after one with a default is reported with the class's file and line.
"""

# No ``from __future__ import annotations`` here: Equinox recognises ``eqx.AbstractVar[...]``
# only as an evaluated annotation. As a string it would become an ordinary dataclass field
# of the protocol, which fixes its position in every subclass's field order.

import abc
import dataclasses
import inspect
import typing
import weakref
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

from ssvae_core.modelling.types import AcquisitionInputs, DecoderOutput, EncoderOutput

# Whether a component class gets the ``__init__`` that dataclasses writes from its fields
# (Equinox's rule: a class without its own ``__init__`` inherits its nearest base's choice).
_GENERATED_INIT: "weakref.WeakKeyDictionary[type, bool]" = weakref.WeakKeyDictionary()


def _gets_generated_init(cls: type) -> bool:
    if "__init__" in cls.__dict__:
        return False
    for base in cls.__mro__[1:]:
        if base in _GENERATED_INIT:
            return _GENERATED_INIT[base]
        if base is eqx.Module or base is object:
            return True
        if "__init__" in base.__dict__:
            return False  # a hand-written __init__ (or one this check cannot tell apart)
    return True


def _is_class_variable(annotation: object) -> bool:
    if isinstance(annotation, str):
        return annotation.split("[", 1)[0].strip() in ("ClassVar", "typing.ClassVar")
    return typing.get_origin(annotation) is typing.ClassVar or annotation is typing.ClassVar


def _is_abstract_variable(annotation: object) -> bool:
    # Equinox drops evaluated AbstractVar / AbstractClassVar annotations from the dataclass.
    return typing.get_origin(annotation) in (eqx.AbstractVar, eqx.AbstractClassVar)


def _is_keyword_marker(annotation: object) -> bool:
    if isinstance(annotation, str):
        return annotation in ("KW_ONLY", "dataclasses.KW_ONLY")
    return annotation is dataclasses.KW_ONLY


def _has_default(field: "dataclasses.Field[Any]") -> bool:
    return (
        field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
    )


def _init_fields(cls: type) -> list[tuple[str, bool, str]]:
    """``(name, has_default, declared_in)`` for the positional ``__init__`` parameters that
    dataclasses will make of ``cls``'s fields, in its order: inherited fields first (in MRO
    order, a redeclared field keeping its inherited place), then the class's own."""
    fields: dict[str, tuple[bool, bool, str]] = {}  # name -> (positional, has_default, owner)
    for base in reversed(cls.__mro__[1:]):
        if dataclasses.is_dataclass(base):
            for field in dataclasses.fields(base):
                positional = field.init and not field.kw_only
                fields[field.name] = (positional, _has_default(field), base.__qualname__)
    keyword_only = False
    for name, annotation in inspect.get_annotations(cls).items():
        if _is_keyword_marker(annotation):
            keyword_only = True
            continue
        if _is_class_variable(annotation) or _is_abstract_variable(annotation):
            continue
        value = cls.__dict__.get(name, dataclasses.MISSING)
        if isinstance(value, dataclasses.Field):
            positional = value.init and not (keyword_only or value.kw_only is True)
            fields[name] = (positional, _has_default(value), cls.__qualname__)
        else:
            fields[name] = (not keyword_only, value is not dataclasses.MISSING, cls.__qualname__)
    return [
        (name, default, owner)
        for name, (positional, default, owner) in fields.items()
        if positional
    ]


def _where(cls: type) -> str:
    """``path, line N`` of the class statement (as precise as the source allows)."""
    try:
        path = inspect.getsourcefile(cls) or inspect.getfile(cls)
    except TypeError:
        return f"module {cls.__module__}"
    line = getattr(cls, "__firstlineno__", None)
    if line is None:
        try:
            line = inspect.getsourcelines(cls)[1]
        except (OSError, TypeError):
            return path
    return f"{path}, line {line}"


def check_field_order(cls: type) -> None:
    """Raise ``TypeError`` if ``cls`` puts a field without a default after one with a default.

    dataclasses (which Equinox uses to build a module's ``__init__``) refuses such a class
    with ``non-default argument 'x' follows default argument`` and no hint of where; this
    check runs first, from ``__init_subclass__``, and names the class, its file and line,
    the fields and the fix. A class with its own ``__init__`` (or inheriting one) is not
    checked: its fields are not ``__init__`` parameters, so their order is free.
    """
    generated = _gets_generated_init(cls)
    _GENERATED_INIT[cls] = generated
    if not generated:
        return
    first_default: tuple[str, str] | None = None
    late: list[str] = []
    for name, has_default, owner in _init_fields(cls):
        if has_default:
            first_default = first_default or (name, owner)
        elif first_default is not None:
            late.append(name)
    if not late or first_default is None:
        return
    default_name, owner = first_default
    inherited = "" if owner == cls.__qualname__ else f" (inherited from {owner})"
    missing = ", ".join(repr(name) for name in late)
    raise TypeError(
        f"{cls.__qualname__} ({_where(cls)}): field{'s' if len(late) > 1 else ''} {missing} "
        f"without a default follow{'' if len(late) > 1 else 's'} {default_name!r}{inherited}, "
        "which has a default; the generated __init__ takes the fields in order, so every "
        "field after the first default needs one too. Fix: declare the fields without "
        f"defaults first, give {missing} a default, or set {default_name!r} in an __init__ "
        "of your own instead of giving it a default (with an __init__, field order is free)."
    )


def _method(value: object) -> object | None:
    """The function behind a class attribute that is a method or property, else ``None``."""
    if isinstance(value, (staticmethod, classmethod)):
        return value.__func__
    if isinstance(value, (property, typing.cast(type, type(lambda: None)))):
        return value
    return None


def concrete_override(cls: type, protocol: type) -> str | None:
    """``"C.m overrides the concrete B.m"`` for the first method of ``cls`` (or of one of
    its bases below ``protocol``) that replaces a concrete method of a base, else ``None``.

    The abstract-or-final rule: behaviour shared by several components lives in an
    ``Abstract…`` class, and every other class only fills in abstract methods; overriding a
    concrete method hides behaviour the base promised (the registry refuses such a class).
    Special methods other than ``__call__`` are not checked (dataclasses writes them).
    """
    for owner in cls.__mro__:
        if owner is protocol or not (isinstance(owner, type) and issubclass(owner, protocol)):
            continue
        for name, value in vars(owner).items():
            if _method(value) is None or (name.startswith("__") and name != "__call__"):
                continue
            for base in owner.__mro__[1:]:
                if name not in vars(base):
                    continue
                inherited = _method(vars(base)[name])
                if (
                    issubclass(base, protocol)
                    and inherited is not None
                    and not getattr(inherited, "__isabstractmethod__", False)
                ):
                    return (
                        f"{owner.__qualname__}.{name} overrides the concrete "
                        f"{base.__qualname__}.{name}"
                    )
                break
    return None


class FieldOrderChecked(eqx.Module):
    """Base of the component protocols: every subclass's field order is checked when the
    class is defined (``check_field_order``), before dataclasses sees it."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_field_order(cls)


_GENERATED_INIT[FieldOrderChecked] = True


class AbstractEncoder(FieldOrderChecked):
    """Maps one input to ``EncoderOutput`` (``q(z|x)`` and, with channels, ``q(c|x)`` logits)."""

    input_shape: eqx.AbstractVar[tuple[int, ...]]
    latent_dim: eqx.AbstractVar[int]
    num_components: eqx.AbstractVar[int]

    @abc.abstractmethod
    def __call__(self, x: Float[Array, "*sample"]) -> EncoderOutput:
        """Encode one example; ``logits`` must be ``None`` iff ``num_components == 0``."""


class AbstractDecoder(FieldOrderChecked):
    """Maps a latent ``z`` (and a component embedding ``e_c``) to ``DecoderOutput``."""

    output_shape: eqx.AbstractVar[tuple[int, ...]]
    conditioning: eqx.AbstractVar[str]

    @abc.abstractmethod
    def __call__(
        self, z: Float[Array, " D"], embedding: Float[Array, " E"] | None
    ) -> DecoderOutput:
        """Decode one example; ``embedding`` is ``None`` exactly when ``conditioning == 'none'``."""


class AbstractPrior(FieldOrderChecked):
    """The prior ``p(c) p(z|c)``: KL terms, samples, regularisers and optimiser scales.

    ``num_components`` is ``K`` (0 for a prior without channels). ``conditions_decoder``
    says whether the decoder receives the component embedding ``e_c``.
    """

    num_components: eqx.AbstractVar[int]
    conditions_decoder: eqx.AbstractVar[bool]

    @abc.abstractmethod
    def log_weights(self) -> Float[Array, " K"]:
        """``log π``; an empty array for a prior without channels."""

    @abc.abstractmethod
    def kl_terms(
        self,
        posterior: EncoderOutput,
        z: Float[Array, "B D"],
        *,
        encoder: AbstractEncoder,
        key: PRNGKeyArray,
    ) -> dict[str, Float[Array, " B"]]:
        """Per-example KL terms by name.

        ``"kl_z"`` is weighted by the annealed ``β_z(t)`` and ``"kl_c"`` (``KL(q(c|x)||π)``)
        by ``β_c``; any other name enters the loss with weight 1. ``encoder`` is there for
        priors defined through it (a VampPrior re-encodes its pseudo-inputs).
        """

    @abc.abstractmethod
    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        """Draw ``(z, c)`` from the prior; ``c`` is all zeros without channels."""

    @abc.abstractmethod
    def regularisers(self) -> dict[str, Float[Array, ""]]:
        """Scalar penalties on the prior's own parameters (e.g. a Dirichlet on π)."""

    @abc.abstractmethod
    def parameter_scales(self) -> dict[str, float]:
        """Learning-rate scale per field name; ``0.0`` freezes the field exactly."""


class AbstractHead(FieldOrderChecked):
    """Turns the posterior into class probabilities and a supervised loss.

    Non-differentiable statistics (τ's soft counts) live in a head state pytree that the
    training state carries; the head itself holds only parameters and static options.
    """

    num_classes: eqx.AbstractVar[int]

    @abc.abstractmethod
    def init_state(self) -> PyTree[Any]:
        """The head's initial state (e.g. zero soft counts)."""

    @abc.abstractmethod
    def predict_proba(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: PyTree[Any]
    ) -> Float[Array, "B Y"]:
        """``p(y|x)`` for each example; rows sum to 1."""

    @abc.abstractmethod
    def certainty(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: PyTree[Any]
    ) -> Float[Array, " B"]:
        """Certainty in [0, 1]; the OOD score is ``1 - certainty``."""

    @abc.abstractmethod
    def supervised_loss(
        self,
        posterior: EncoderOutput,
        z: Float[Array, "B D"],
        labels: Int[Array, " B"],
        state: PyTree[Any],
    ) -> Float[Array, " B"]:
        """Per-example supervised loss; the caller masks unlabeled rows (label ``-1``)."""

    @abc.abstractmethod
    def update_state(
        self, state: PyTree[Any], posterior: EncoderOutput, labels: Int[Array, " B"]
    ) -> PyTree[Any]:
        """New head state after seeing a batch; rows with label ``-1`` contribute nothing."""

    @abc.abstractmethod
    def class_map(self, state: PyTree[Any]) -> Float[Array, "K Y"] | None:
        """The channel→label map ``τ`` (``K × Y``, rows sum to 1), or ``None`` for a head
        without one (a head that does not classify through channels)."""

    @abc.abstractmethod
    def label_mass(self, state: PyTree[Any]) -> Float[Array, " K"] | None:
        """The label mass each channel holds (the τ head: ``Σ_y s_{c,y}``), or ``None`` for a
        head that does not classify through channels. Free channels are those with
        (almost) none; a new class claims them."""

    @abc.abstractmethod
    def free_channels(
        self, state: PyTree[Any], usage: Float[Array, " K"]
    ) -> Bool[Array, " K"] | None:
        """Which channels no label owns yet, given the channel usage ``p̂`` on the data;
        ``None`` for a head without channels."""

    @abc.abstractmethod
    def assign_channels(
        self, state: PyTree[Any], num_classes: int, owners: dict[int, tuple[int, ...]]
    ) -> tuple["AbstractHead", PyTree[Any]]:
        """A head (and its state) for ``num_classes ≥ self.num_classes`` classes in which
        class ``y`` starts out owning the channels ``owners[y]`` (a class named after
        training, or one that had no labels until now); other classes keep their
        statistics. Heads that cannot do this raise ``NotImplementedError``."""


class AbstractChannelFreeHead(AbstractHead):
    """A head that classifies from ``z`` (or anything but channels): no channel→label map,
    no label mass, no free channels, and classes cannot be given channels after training.
    Its subclasses implement the five methods that remain abstract."""

    def class_map(self, state: PyTree[Any]) -> None:
        """``None``: the head does not classify through channels."""
        return None

    def label_mass(self, state: PyTree[Any]) -> None:
        """``None``: the head does not classify through channels."""
        return None

    def free_channels(self, state: PyTree[Any], usage: Float[Array, " K"]) -> None:
        """``None``: the head does not classify through channels."""
        return None

    def assign_channels(
        self, state: PyTree[Any], num_classes: int, owners: dict[int, tuple[int, ...]]
    ) -> tuple["AbstractHead", PyTree[Any]]:
        """Always raises ``NotImplementedError``: the head has no channels to give."""
        raise NotImplementedError(
            f"the {type(self).__name__} head cannot give channels to classes after training"
        )


class AbstractAcquisition(FieldOrderChecked):
    """Chooses which unlabeled examples to label next, from what the model knows of them.

    ``score`` gives every example one finite number — higher means "label this
    sooner" — from ``AcquisitionInputs`` and a PRNG key (the same
    key gives the same scores). ``select`` turns scores into a batch. An acquisition
    whose batch is simply the best scores subclasses ``AbstractTopScoreAcquisition``,
    which implements ``select``; a batch-aware one (that spreads a batch over the
    latent space) implements ``select`` itself, and must still never choose a labeled
    example nor one example twice.

    ``num_samples`` is how many posterior samples ``z_s ~ q(z|x)`` per example the score
    reads from ``inputs.sample_probabilities`` (0 when it needs none; drawing them costs
    a decoder pass per channel and sample).

    ``label_free`` (a class attribute) says the acquisition needs no label: it reads only
    what a model trained without labels has (``q(c|x)``, ``q(z|x)``), so it may choose the
    first examples to label. One that reads ``p(y|x)`` or τ leaves it ``False`` and is
    refused on a model without labels, whose ``p(y|x)`` is τ's prior alone.
    """

    num_samples: eqx.AbstractVar[int]
    label_free: ClassVar[bool] = False

    @abc.abstractmethod
    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        """One finite score per example (labeled ones included); higher = label sooner."""

    @abc.abstractmethod
    def select(
        self, inputs: AcquisitionInputs, count: int, key: PRNGKeyArray
    ) -> Int[Array, " count"]:
        """The ``count`` unlabeled examples to label next, best first: never a labeled
        example, never one example twice.

        ``count`` must not exceed the number of unlabeled examples.
        """


class AbstractTopScoreAcquisition(AbstractAcquisition):
    """An acquisition whose batch is the ``count`` highest-scoring unlabeled examples (ties
    go to the lower index); its subclasses implement ``score`` only."""

    def select(
        self, inputs: AcquisitionInputs, count: int, key: PRNGKeyArray
    ) -> Int[Array, " count"]:
        """The ``count`` highest-scoring unlabeled examples, best first."""
        return top_unlabeled(self.score(inputs, key), inputs.labeled, count)


def top_unlabeled(
    scores: Float[Array, " N"], labeled: Bool[Array, " N"], count: int
) -> Int[Array, " count"]:
    """Indices of the ``count`` highest scores among unlabeled examples (ties: lower index
    first)."""
    available = int(jnp.sum(~labeled))
    if not 0 <= count <= available:
        raise ValueError(f"count must be between 0 and the {available} unlabeled examples, got {count}")
    masked = jnp.where(labeled, -jnp.inf, jnp.nan_to_num(scores, nan=-jnp.inf, neginf=-jnp.inf))
    order = jnp.argsort(-masked, stable=True)
    # an unlabeled example with a -inf score still ranks above every labeled one
    rank = jnp.where(labeled[order], 1, 0)
    order = order[jnp.argsort(rank, stable=True)]
    return order[:count]
