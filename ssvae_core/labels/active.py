"""Choosing examples to label: acquisition inputs from a model, and the query itself.

``acquisition_inputs`` runs the model over the candidates in fixed-size batches (one
compile per model structure) and collects what acquisition functions read;
``build_acquisition`` builds a registered acquisition by name for a model; ``query``
puts both together and returns the examples to label next.

``p(y | x, z_s)`` for a posterior sample ``z_s`` (what ``bald`` reads): with channels, the
channel posterior given the sample, ``p(c | x, z_s) ∝ π_c p(x | z_s, c)``, goes through the
head in place of ``q(c|x)``; without channels the head reads ``z_s`` directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ssvae_core.errors import ConfigError, DataError
from ssvae_core.modelling.components import BuildContext
from ssvae_core.modelling.model import SSVAE
from ssvae_core.modelling.protocols import AbstractAcquisition
from ssvae_core.modelling.types import AcquisitionInputs, EncoderOutput, reparameterise
from ssvae_core.options import parse_options
from ssvae_core.registry import RegisteredComponent, Registry, default_registry
from ssvae_core.runs.calibration import Calibration

DEFAULT_BATCH = 512
DEFAULT_STRATEGY = "entropy"


@dataclass(frozen=True)
class QueryResult:
    """The examples to label next, best first: ``indices`` into the candidates, the
    acquisition's ``scores`` of them, the predicted class and the model's certainty."""

    strategy: str
    indices: np.ndarray
    scores: np.ndarray
    predictions: np.ndarray
    certainty: np.ndarray

    def __len__(self) -> int:
        return int(self.indices.size)


def _sample_probabilities(
    model: SSVAE, head_state: PyTree[Any], posterior: EncoderOutput, x: Float[Array, "B ..."], z: Float[Array, "B D"]
) -> Float[Array, "B Y"]:
    if posterior.logits is None:
        return model.head.predict_proba(posterior, z, head_state)
    logits = model.prior.log_weights() - model.channel_nll(x, z)
    given_z = EncoderOutput(posterior.z_mean, posterior.z_log_var, logits)
    return model.head.predict_proba(given_z, z, head_state)


@eqx.filter_jit
def _inputs_batch(
    model: SSVAE, head_state: PyTree[Any], x: Float[Array, "B ..."], key: PRNGKeyArray, num_samples: int
) -> dict[str, Array]:
    posterior = model.encode(x)
    responsibilities = posterior.responsibilities
    if responsibilities is None:
        responsibilities = jnp.zeros((x.shape[0], 0))
    z = posterior.z_mean
    keys = jax.random.split(key, num_samples)
    samples = [
        _sample_probabilities(model, head_state, posterior, x, reparameterise(posterior, k))
        for k in keys
    ]
    probabilities = model.head.predict_proba(posterior, z, head_state)
    stacked = (
        jnp.stack(samples) if samples else jnp.zeros((0, *probabilities.shape), probabilities.dtype)
    )
    return {
        "probabilities": probabilities,
        "certainty": model.head.certainty(posterior, z, head_state),
        "responsibilities": responsibilities,
        "z_mean": posterior.z_mean,
        "z_log_var": posterior.z_log_var,
        "sample_probabilities": stacked,
    }


def acquisition_inputs(
    model: SSVAE,
    head_state: PyTree[Any],
    x: np.ndarray,
    labeled: np.ndarray,
    *,
    num_samples: int = 0,
    key: PRNGKeyArray | None = None,
    batch_size: int = DEFAULT_BATCH,
    calibration: Calibration | None = None,
) -> AcquisitionInputs:
    """What an acquisition reads about the examples ``x``; ``labeled`` marks those that
    carry a label. ``num_samples`` posterior samples per example are drawn with ``key``
    (each batch gets its own fold of it). With a ``calibration`` the probabilities, and
    those of each posterior sample, are calibrated (``ssvae_core.runs.calibration``)."""
    count = x.shape[0]
    if labeled.shape != (count,):
        raise DataError(f"labeled must have one flag per example ({count}), got shape {labeled.shape}")
    key = jax.random.PRNGKey(0) if key is None else key
    size = min(batch_size, count)
    outputs: list[dict[str, np.ndarray]] = []
    for batch, start in enumerate(range(0, count, size)):
        chunk = np.asarray(x[start : start + size], dtype=np.float32)
        valid = chunk.shape[0]
        if valid < size:  # pad the last batch: one compile for every batch
            chunk = np.concatenate([chunk, np.zeros((size - valid, *chunk.shape[1:]), np.float32)])
        result = jax.device_get(
            _inputs_batch(model, head_state, jnp.asarray(chunk), jax.random.fold_in(key, batch), num_samples)
        )
        outputs.append(
            {
                k: (np.asarray(v)[:, :valid] if k == "sample_probabilities" else np.asarray(v)[:valid])
                for k, v in result.items()
            }
        )
    merged = {
        k: np.concatenate([o[k] for o in outputs], axis=1 if k == "sample_probabilities" else 0)
        for k in outputs[0]
    }
    if calibration is not None:
        merged["probabilities"] = calibration.apply(merged["probabilities"])
        merged["sample_probabilities"] = calibration.apply(merged["sample_probabilities"])
    class_map = model.head.class_map(head_state)
    return AcquisitionInputs(
        probabilities=jnp.asarray(merged["probabilities"]),
        certainty=jnp.asarray(merged["certainty"]),
        responsibilities=jnp.asarray(merged["responsibilities"]),
        tau=None if class_map is None else jnp.asarray(class_map),
        z_mean=jnp.asarray(merged["z_mean"]),
        z_log_var=jnp.asarray(merged["z_log_var"]),
        sample_probabilities=jnp.asarray(merged["sample_probabilities"]),
        labeled=jnp.asarray(labeled, dtype=bool),
    )


def query_inputs(
    model: SSVAE,
    head_state: PyTree[Any],
    x: np.ndarray,
    labeled: np.ndarray,
    *,
    num_samples: int,
    key: PRNGKeyArray,
    calibration: Calibration | None = None,
) -> AcquisitionInputs:
    """The acquisition inputs ``query`` computes with its ``key``: pass them back to
    ``query(..., inputs=...)`` to answer further queries on the same model without running
    it again."""
    inputs_key = jax.random.split(key)[0]
    return acquisition_inputs(
        model, head_state, x, labeled, num_samples=num_samples, key=inputs_key, calibration=calibration,
    )


def model_context(model: SSVAE, input_shape: tuple[int, ...], embedding_dim: int = 0) -> BuildContext:
    """The ``BuildContext`` an acquisition factory receives for ``model``."""
    return BuildContext(
        input_shape=tuple(input_shape),
        latent_dim=int(model.encoder.latent_dim),
        num_classes=int(model.head.num_classes),
        num_components=int(model.num_components),
        conditioning=str(model.decoder.conditioning),
        embedding_dim=embedding_dim if model.embeddings is None else int(model.embeddings.shape[-1]),
        likelihood=model.likelihood,
        data=None,
    )


def registered_strategy(name: str, registry: Registry) -> RegisteredComponent:
    """The acquisition registered as ``name``; a ``ConfigError`` names the allowed ones."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"the strategy must be an acquisition name; got {name!r}")
    try:
        return registry.get("acquisition", name)
    except ConfigError as error:
        raise ConfigError(str(error).replace("acquisition.name", "strategy", 1)) from None


def build_acquisition(
    name: str,
    context: BuildContext,
    options: Mapping[str, Any] | Any | None = None,
    *,
    registry: Registry | None = None,
) -> AbstractAcquisition:
    """The registered acquisition ``name`` built for a model described by ``context``;
    ``options`` is a mapping of option values (checked like a config table) or the
    options dataclass itself."""
    registered = registered_strategy(name, registry or default_registry())
    factory = registered.factory
    if options is None:
        options = factory.default_options()
    elif isinstance(options, Mapping):
        options = parse_options(factory.options, options, name)
    elif not (dataclasses.is_dataclass(options) and isinstance(options, factory.options)):
        raise ConfigError(
            f"options of strategy {name!r} must be a mapping or {factory.options.__name__}; "
            f"got {type(options).__name__}"
        )
    try:
        built = factory.build(options, context, jax.random.PRNGKey(0))
    except ValueError as error:
        raise ConfigError(f"strategy {name!r}: {error}") from None
    if not isinstance(built, AbstractAcquisition):
        raise ConfigError(
            f"strategy {name!r} from plugin {registered.plugin!r} built {type(built).__name__}, "
            "which is not an AbstractAcquisition"
        )
    return built


def label_free_strategies(registry: Registry | None = None) -> list[str]:
    """The registered acquisitions that need no label (``label_free``): those that can
    choose the first examples to label from a model trained without any."""
    registry = registry or default_registry()
    return [
        name for name in registry.names("acquisition")
        if getattr(registry.get("acquisition", name).factory.component_type, "label_free", False)
    ]


def query_key(seed: int, step: int) -> PRNGKeyArray:
    """The key of a query: the seed folded with the training step reached (so each round
    of a loop draws anew, and the same run queried twice draws the same)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), step)


def _query_mask(labeled: np.ndarray, count: object) -> np.ndarray:
    """``labeled`` as a boolean mask, checked to leave ``count`` (a positive integer)
    unlabeled rows to query."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise DataError(f"the number of examples to query must be a positive integer; got {count!r}")
    labeled = np.asarray(labeled, dtype=bool)
    unlabeled = int(np.sum(~labeled))
    if count > unlabeled:
        raise DataError(
            f"cannot query {count} examples: only {unlabeled} of the {labeled.size} training "
            "examples are unlabeled"
        )
    return labeled


def _reused_inputs(
    inputs: AcquisitionInputs, labeled: np.ndarray, num_samples: int, strategy: str
) -> AcquisitionInputs:
    """Precomputed acquisition inputs with ``labeled`` replaced, checked to fit the query."""
    sample_count = int(inputs.sample_probabilities.shape[0])
    if inputs.probabilities.shape[0] != labeled.size or sample_count != num_samples:
        raise DataError(
            f"the precomputed acquisition inputs hold {inputs.probabilities.shape[0]} examples "
            f"and {sample_count} posterior samples; strategy {strategy!r} needs "
            f"{labeled.size} examples and {num_samples} samples"
        )
    return dataclasses.replace(inputs, labeled=jnp.asarray(labeled, dtype=bool))


def _with_ood(
    inputs: AcquisitionInputs,
    acquisition: Any,
    strategy: str,
    x: np.ndarray,
    ood: Callable[[np.ndarray, str], np.ndarray] | None,
) -> AcquisitionInputs:
    """``inputs`` with the OOD score the acquisition ranks by, when it is not ``certainty``."""
    wanted = getattr(acquisition, "ood_score", "certainty")
    if wanted == "certainty":
        return inputs
    if ood is None:
        raise ConfigError(
            f"strategy {strategy!r} ranks by the {wanted} OOD score, which needs the classifier "
            "(its training data's scores, its background model); query through "
            "SSVAEClassifier.query, `ssvae query` or the studio"
        )
    return dataclasses.replace(inputs, ood=jnp.asarray(ood(x, wanted), dtype=jnp.float32))


def query(
    model: SSVAE,
    head_state: PyTree[Any],
    x: np.ndarray,
    labeled: np.ndarray,
    count: int,
    *,
    strategy: str = DEFAULT_STRATEGY,
    options: Mapping[str, Any] | Any | None = None,
    input_shape: tuple[int, ...] | None = None,
    key: PRNGKeyArray | None = None,
    registry: Registry | None = None,
    calibration: Calibration | None = None,
    ood: Callable[[np.ndarray, str], np.ndarray] | None = None,
    inputs: AcquisitionInputs | None = None,
) -> QueryResult:
    """The ``count`` unlabeled examples of ``x`` to label next by ``strategy``, best first.

    ``labeled`` marks the rows already labeled (never chosen). A ``count`` larger than
    the unlabeled rows, or below 1, is a ``DataError``; with no row labeled, a
    strategy that reads predictions (not ``label_free``) is a ``ConfigError`` naming
    those that need no label. The acquisition reads the ``calibration``'s ``p(y|x)`` when
    one is given. An acquisition with an ``ood_score`` other than ``certainty`` (the
    ``ood`` acquisition's ``score``) gets ``ood(x, score)`` in ``AcquisitionInputs.ood``
    (e.g. ``SSVAEClassifier.ood_score``); without ``ood`` it is a ``ConfigError``.
    ``inputs``, when given, are what ``query_inputs`` returned for the same model, ``x``,
    ``key``, calibration and the strategy's ``num_samples`` (computed once, e.g. by a server
    that answers many queries on one model); their ``labeled`` is replaced.
    """
    labeled = _query_mask(labeled, count)
    shape = tuple(input_shape) if input_shape is not None else tuple(x.shape[1:])
    registry = registry or default_registry()
    acquisition = build_acquisition(strategy, model_context(model, shape), options, registry=registry)
    if not labeled.any() and not type(acquisition).label_free:
        raise ConfigError(
            f"strategy {strategy!r} reads the model's predictions p(y|x), which a model trained "
            "without labels does not have; to choose the first labels use one of: "
            f"{', '.join(label_free_strategies(registry))}"
        )
    key = jax.random.PRNGKey(0) if key is None else key
    score_key = jax.random.split(key)[1]
    num_samples = int(acquisition.num_samples)
    if inputs is None:
        inputs = query_inputs(
            model, head_state, x, labeled, num_samples=num_samples, key=key, calibration=calibration,
        )
    else:
        inputs = _reused_inputs(inputs, labeled, num_samples, strategy)
    inputs = _with_ood(inputs, acquisition, strategy, x, ood)
    chosen = np.asarray(acquisition.select(inputs, int(count), score_key))
    if chosen.shape != (count,) or np.unique(chosen).size != count or np.any(labeled[chosen]):
        raise DataError(
            f"strategy {strategy!r} returned an invalid batch (it must hold {count} distinct "
            "unlabeled examples); check the acquisition plugin with "
            "ssvae_core.testing.check_acquisition"
        )
    scores = np.asarray(acquisition.score(inputs, score_key))
    probabilities = np.asarray(inputs.probabilities)
    return QueryResult(
        strategy=strategy,
        indices=chosen.astype(np.int64),
        scores=scores[chosen],
        predictions=np.argmax(probabilities[chosen], axis=-1),
        certainty=np.asarray(inputs.certainty)[chosen],
    )
