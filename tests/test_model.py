"""The model, the decoder's conditioning methods, and the objective."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ssvae_core.modelling.objective as objective_module
import ssvae_core.modelling.terms.builtin as builtin_terms
from ssvae_core.config import Config, config_from_dict
from ssvae_core.modelling.conditioning import CONDITIONING_METHODS
from ssvae_core.modelling.model import SSVAE, build_model
from ssvae_core.modelling.networks.dense import DenseDecoder
from ssvae_core.modelling.objective import build_objective
from ssvae_core.modelling.types import Batch, EncoderOutput

SHAPE = (4, 4)
KEY = jax.random.PRNGKey(0)
STEP = jnp.asarray(0, dtype=jnp.int32)


def _raw(**sections: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "model": {"latent_dim": 2, "embedding_dim": 4},
        "prior": {"name": "mixture", "num_components": 4},
        "encoder": {"hidden": [16]},
        "decoder": {"hidden": [16]},
    }
    for name, table in sections.items():
        raw[name] = {**raw.get(name, {}), **table}
    return raw


@pytest.fixture(scope="module")
def built() -> tuple[SSVAE, Config]:
    return build_model(
        config_from_dict(_raw()), input_shape=SHAPE, num_classes=3, key=jax.random.PRNGKey(1)
    )


@pytest.fixture(scope="module")
def model(built: tuple[SSVAE, Config]) -> SSVAE:
    return built[0]


@pytest.fixture(scope="module")
def batch() -> tuple[jax.Array, jax.Array]:
    x = jax.random.uniform(jax.random.PRNGKey(2), (8, *SHAPE))
    labels = jnp.array([-1, -1, -1, -1, -1, 0, 1, 2], dtype=jnp.int32)
    return x, labels


CORE_LOSS = ("beta_z", "kl_warmup_steps", "beta_c", "dirichlet_weight", "reconstruct_labeled", "top_channels")


def _loss_config(**changes: Any) -> dict[str, Any]:
    """The [loss] table: core keys as they are, ``<term>_<option>=v`` as [loss.<term>]."""
    table: dict[str, Any] = {}
    for key, value in changes.items():
        if key in CORE_LOSS:
            table[key] = value
            continue
        term, option = key.rsplit("_", 1)
        table.setdefault(term, {})[option] = value
    return table


def objective(model, head_state, x, labels, step, key, loss, *, x_view=None, graph_labels=None):
    """The objective of ``loss`` on one batch; terms whose inputs are absent are off."""
    loss = {k: dict(v) if isinstance(v, dict) else v for k, v in loss.items()}
    if x_view is None:
        for term in ("consistency", "pseudo_label", "mutual_information"):
            loss.setdefault(term, {})["weight"] = 0.0
    if graph_labels is None:
        loss.setdefault("graph_label", {})["weight"] = 0.0
    config = config_from_dict(_raw(loss=loss))
    built = build_objective(config, model, input_shape=SHAPE, num_classes=3)
    fields = {} if graph_labels is None else {"graph_labels": graph_labels}
    return built(model, head_state, Batch(x=x, labels=labels, x_view=x_view, fields=fields), step, key)


def _use_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every reparameterised sample ``z = μ``, so values can be recomputed by hand."""
    for module in (objective_module, builtin_terms):
        monkeypatch.setattr(module, "reparameterise", lambda posterior, key: posterior.z_mean)


def _counts(model: SSVAE) -> jax.Array:
    return jnp.ones((model.num_components, 3))


# --- conditioning --------------------------------------------------------------------------


def _decoder(method: str) -> DenseDecoder:
    return DenseDecoder(
        SHAPE, 2, (16,), "gelu", method, embedding_dim=4, scale_size=0, key=jax.random.PRNGKey(3)
    )


Z = jnp.array([0.3, -0.7])
E_A = jnp.array([1.0, 0.0, -1.0, 0.5])
E_B = jnp.array([-2.0, 1.0, 0.0, 0.3])


@pytest.mark.parametrize("method", CONDITIONING_METHODS)
def test_dense_decoder_output_has_the_sample_shape(method: str) -> None:
    embedding = None if method == "none" else E_A
    assert _decoder(method)(Z, embedding).loc.shape == SHAPE


@pytest.mark.parametrize("method", ["concat", "film", "cin"])
def test_conditioned_decoder_output_depends_on_the_embedding(method: str) -> None:
    decoder = _decoder(method)
    assert not np.allclose(np.asarray(decoder(Z, E_A).loc), np.asarray(decoder(Z, E_B).loc))


def test_unconditioned_decoder_ignores_the_embedding() -> None:
    decoder = _decoder("none")
    np.testing.assert_array_equal(np.asarray(decoder(Z, E_A).loc), np.asarray(decoder(Z, E_B).loc))
    np.testing.assert_array_equal(np.asarray(decoder(Z, None).loc), np.asarray(decoder(Z, E_A).loc))


def test_auto_conditioning_resolves_to_film_for_the_mixture_prior(
    built: tuple[SSVAE, Config],
) -> None:
    model, resolved = built
    assert resolved.model.conditioning == "film"
    assert model.embeddings is not None and model.embeddings.shape == (4, 4)


def test_auto_conditioning_resolves_to_none_and_softmax_head_for_the_standard_prior() -> None:
    raw = _raw()
    raw["prior"] = {"name": "standard"}
    model, resolved = build_model(config_from_dict(raw), input_shape=SHAPE, num_classes=3, key=KEY)
    assert resolved.model.conditioning == "none"
    assert resolved.head.name == "softmax"
    assert model.embeddings is None


def test_heteroscedastic_per_pixel_decoder_emits_one_scale_per_pixel() -> None:
    raw = _raw(model={"likelihood": "heteroscedastic", "sigma_per_pixel": True})
    model, _ = build_model(config_from_dict(raw), input_shape=SHAPE, num_classes=3, key=KEY)
    output = model.decoder(Z, model.embeddings[0])
    assert output.scale_raw is not None and output.scale_raw.shape == (16,)


def test_channel_nll_has_one_column_per_channel(model: SSVAE, batch) -> None:
    x, _ = batch
    assert model.channel_nll(x, jnp.zeros((8, 2))).shape == (8, 4)


# --- objective -----------------------------------------------------------------------------


def test_objective_metrics_name_every_term(model: SSVAE, batch) -> None:
    x, labels = batch
    _, (metrics, _) = objective(model, _counts(model), x, labels, STEP, KEY, _loss_config())
    for name in ("reconstruction", "kl_z", "kl_c", "usage", "supervised", "loss"):
        assert name in metrics
        assert np.isfinite(float(metrics[name]))


def test_objective_returns_loss_metric_equal_to_total(model: SSVAE, batch) -> None:
    x, labels = batch
    total, (metrics, _) = objective(model, _counts(model), x, labels, STEP, KEY, _loss_config())
    assert float(total) == float(metrics["loss"])


def test_reconstruction_is_responsibility_weighted_channel_nll(
    model: SSVAE, batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Use z = μ so the reconstruction can be recomputed without the sampling noise.
    _use_mean(monkeypatch)
    x, _ = batch
    labels = jnp.full((8,), -1, dtype=jnp.int32)
    _, (metrics, _) = objective(model, _counts(model), x, labels, STEP, KEY, _loss_config())
    posterior = model.encode(x)
    nll = np.asarray(model.channel_nll(x, posterior.z_mean))
    r = np.asarray(jax.nn.softmax(posterior.logits, axis=-1))
    expected = np.mean(np.sum(r * nll, axis=-1))
    assert float(metrics["reconstruction"]) == pytest.approx(expected, rel=1e-5)


def test_positive_usage_weight_adds_weight_times_usage_entropy_to_the_loss(
    model: SSVAE, batch
) -> None:
    x, labels = batch
    plain, _ = objective(
        model, _counts(model), x, labels, STEP, KEY, _loss_config(usage_weight=0.0)
    )
    weighted, (metrics, _) = objective(
        model, _counts(model), x, labels, STEP, KEY, _loss_config(usage_weight=0.5)
    )
    assert float(weighted) - float(plain) == pytest.approx(
        0.5 * float(metrics["usage"]), rel=1e-4
    )


def test_kl_warmup_zeroes_beta_z_at_step_zero(model: SSVAE, batch) -> None:
    x, labels = batch
    config = _loss_config(kl_warmup_steps=10, beta_z=2.0)
    _, (metrics, _) = objective(model, _counts(model), x, labels, STEP, KEY, config)
    assert float(metrics["beta_z"]) == 0.0


def test_supervised_metric_is_zero_without_labeled_rows(model: SSVAE, batch) -> None:
    x, _ = batch
    labels = jnp.full((8,), -1, dtype=jnp.int32)
    _, (metrics, _) = objective(model, _counts(model), x, labels, STEP, KEY, _loss_config())
    assert float(metrics["supervised"]) == 0.0


def _unsupervised_metrics(model: SSVAE, x: jax.Array, labels: jax.Array, config: dict[str, Any]):
    _, (metrics, _) = objective(model, _counts(model), x, labels, STEP, KEY, config)
    return {k: float(metrics[k]) for k in ("reconstruction", "kl_z", "kl_c")}


def test_reconstruct_labeled_false_excludes_labeled_rows(model: SSVAE, batch) -> None:
    x, labels = batch
    changed = x.at[5:].set(1.0 - x[5:])  # rows 5..7 are the labeled ones
    config = _loss_config(reconstruct_labeled=False)
    assert _unsupervised_metrics(model, x, labels, config) == _unsupervised_metrics(
        model, changed, labels, config
    )


def test_reconstruct_labeled_true_includes_labeled_rows(model: SSVAE, batch) -> None:
    x, labels = batch
    changed = x.at[5:].set(1.0 - x[5:])
    config = _loss_config(reconstruct_labeled=True)
    before = _unsupervised_metrics(model, x, labels, config)
    after = _unsupervised_metrics(model, changed, labels, config)
    assert before["reconstruction"] != after["reconstruction"]


# --- decoding the top channels only -----------------------------------------------------


def test_top_channels_is_the_renormalised_expectation_over_the_chosen_channels(
    model: SSVAE, batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_mean(monkeypatch)
    x, labels = batch
    posterior = model.encode(x)
    r = np.asarray(posterior.responsibilities)
    nll = np.asarray(model.channel_nll(x, posterior.z_mean))
    for top in (1, 2, 3):
        chosen = np.argsort(-r, axis=1)[:, :top]
        r_top = np.take_along_axis(r, chosen, axis=1)
        nll_top = np.take_along_axis(nll, chosen, axis=1)
        expected = np.mean(np.sum(r_top * nll_top, axis=1) / np.sum(r_top, axis=1))
        _, (metrics, _) = objective(
            model, _counts(model), x, labels, STEP, KEY, _loss_config(top_channels=top)
        )
        assert float(metrics["reconstruction"]) == pytest.approx(expected, rel=1e-5)


def test_top_channels_of_k_or_more_is_the_exact_expectation(model: SSVAE, batch) -> None:
    x, labels = batch
    every = objective(model, _counts(model), x, labels, STEP, KEY, _loss_config())[1][0]
    for top in (model.num_components, model.num_components + 3):
        config = _loss_config(top_channels=top)
        metrics = objective(model, _counts(model), x, labels, STEP, KEY, config)[1][0]
        assert float(metrics["reconstruction"]) == float(every["reconstruction"])


def test_top_channels_decodes_only_m_channels_per_example(model: SSVAE, batch) -> None:
    x, _ = batch
    posterior = model.encode(x)
    channels = jnp.tile(jnp.array([[3, 1]]), (x.shape[0], 1))
    selected = model.selected_channel_nll(x, posterior.z_mean, channels)
    every = model.channel_nll(x, posterior.z_mean)
    np.testing.assert_allclose(np.asarray(selected), np.asarray(every[:, [3, 1]]), rtol=1e-6)


def test_top_channels_gradient_reaches_only_the_chosen_channels_embeddings(
    model: SSVAE, batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_mean(monkeypatch)
    x, labels = batch
    r = np.asarray(model.encode(x).responsibilities)
    chosen = set(np.argmax(r, axis=1).tolist())
    loss = {"top_channels": 1, "consistency": {"weight": 0.0}, "graph_label": {"weight": 0.0}}
    built = build_objective(config_from_dict(_raw(loss=loss)), model, input_shape=SHAPE, num_classes=3)

    def reconstruction(embeddings: jax.Array) -> jax.Array:
        moved = eqx.tree_at(lambda m: m.embeddings, model, embeddings)
        metrics = built(moved, _counts(model), Batch(x=x, labels=labels), STEP, KEY)[1][0]
        return metrics["reconstruction"]

    assert model.embeddings is not None
    grads = np.abs(np.asarray(jax.grad(reconstruction)(model.embeddings))).sum(axis=1)
    for channel in range(model.num_components):
        assert (grads[channel] > 0) == (channel in chosen), (channel, chosen, grads)


def test_detached_view_gives_the_same_loss_and_no_gradient_through_the_view(model: SSVAE, batch) -> None:
    x, labels = batch
    x_view = jnp.clip(x + 0.1, 0.0, 1.0)

    def consistency(view: jax.Array, detach: bool) -> jax.Array:
        loss = {"consistency": {"weight": 1.0, "detach_view": detach}, "graph_label": {"weight": 0.0}}
        built = build_objective(config_from_dict(_raw(loss=loss)), model, input_shape=SHAPE, num_classes=3)
        shifted = Batch(x=x, labels=labels, x_view=view)
        return built(model, _counts(model), shifted, STEP, KEY)[1][0]["consistency"]

    assert float(consistency(x_view, True)) == float(consistency(x_view, False))
    assert np.all(np.asarray(jax.grad(consistency)(x_view, True)) == 0.0)
    assert np.any(np.asarray(jax.grad(consistency)(x_view, False)) != 0.0)


# --- per-example independence -----------------------------------------------------------


def _sub(posterior: EncoderOutput, rows: slice) -> EncoderOutput:
    return jax.tree.map(lambda a: a[rows], posterior)


def test_kl_terms_of_an_example_do_not_depend_on_its_batch_mates(model: SSVAE, batch) -> None:
    x, _ = batch
    posterior = model.encode(x)
    z = posterior.z_mean
    full = model.prior.kl_terms(posterior, z, encoder=model.encoder, key=KEY)
    part = model.prior.kl_terms(
        _sub(posterior, slice(2, 5)), z[2:5], encoder=model.encoder, key=KEY
    )
    assert set(full) == set(part) == {"kl_z", "kl_c"}
    for name in full:
        np.testing.assert_allclose(np.asarray(full[name][2:5]), np.asarray(part[name]), rtol=1e-6)


def test_channel_nll_of_an_example_does_not_depend_on_its_batch_mates(model: SSVAE, batch) -> None:
    x, _ = batch
    z = jax.random.normal(KEY, (8, 2))
    full = model.channel_nll(x, z)
    part = model.channel_nll(x[2:5], z[2:5])
    np.testing.assert_allclose(np.asarray(full[2:5]), np.asarray(part), rtol=1e-6)


def test_supervised_loss_of_an_example_does_not_depend_on_its_batch_mates(
    model: SSVAE, batch
) -> None:
    x, labels = batch
    posterior = model.encode(x)
    z = posterior.z_mean
    full = model.head.supervised_loss(posterior, z, labels, _counts(model))
    part = model.head.supervised_loss(
        _sub(posterior, slice(4, 8)), z[4:], labels[4:], _counts(model)
    )
    np.testing.assert_allclose(np.asarray(full[4:]), np.asarray(part), rtol=1e-6)


# --- KL invariants ----------------------------------------------------------------------


def test_mixture_kl_terms_are_zero_when_posterior_equals_prior(model: SSVAE) -> None:
    posterior = EncoderOutput(
        z_mean=jnp.zeros((3, 2)), z_log_var=jnp.zeros((3, 2)), logits=jnp.zeros((3, 4))
    )
    terms = model.prior.kl_terms(posterior, jnp.zeros((3, 2)), encoder=model.encoder, key=KEY)
    for values in terms.values():
        np.testing.assert_allclose(np.asarray(values), 0.0, atol=1e-6)


def test_mixture_kl_terms_are_non_negative(model: SSVAE, batch) -> None:
    x, _ = batch
    posterior = model.encode(x)
    terms = model.prior.kl_terms(posterior, posterior.z_mean, encoder=model.encoder, key=KEY)
    for values in terms.values():
        assert bool(jnp.all(values >= 0.0))


# --- pseudo-label term ----------------------------------------------------------------------


def test_pseudo_label_term_matches_hand_computation(
    model: SSVAE, batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_mean(monkeypatch)
    x, labels = batch
    view = jnp.flip(x, axis=-1)
    counts = jnp.asarray(np.arange(12, dtype=np.float32).reshape(4, 3) % 5)
    config = _loss_config(pseudo_label_weight=2.0, pseudo_label_threshold=0.0, consistency_weight=0.0)
    total, (metrics, _) = objective(model, counts, x, labels, STEP, KEY, config, x_view=view)
    tau = np.asarray(model.head.tau(counts))
    r = np.asarray(jax.nn.softmax(model.encode(x).logits, axis=-1))
    r_view = np.asarray(jax.nn.softmax(model.encode(view).logits, axis=-1))
    targets = np.argmax(r @ tau, axis=-1)
    unlabeled = np.asarray(labels) < 0
    per_row = -np.log((r_view @ tau)[np.arange(8), targets])
    assert float(metrics["pseudo_label"]) == pytest.approx(per_row[unlabeled].mean(), rel=1e-5)
    assert float(metrics["pseudo_label_share"]) == 1.0
    without, _ = objective(
        model, counts, x, labels, STEP, KEY, {**config, "pseudo_label": {"weight": 0.0}}, x_view=view
    )
    assert float(total) - float(without) == pytest.approx(2.0 * per_row[unlabeled].mean(), rel=1e-4)


def test_mutual_information_term_is_minus_the_information_of_the_two_views_channels(
    model: SSVAE, batch
) -> None:
    from ssvae_core.modelling.losses import view_mutual_information

    x, labels = batch
    view = jnp.flip(x, axis=-1)
    r = jax.nn.softmax(model.encode(x).logits, axis=-1)
    r_view = jax.nn.softmax(model.encode(view).logits, axis=-1)
    base = {"consistency": {"weight": 0.0}}
    without, _ = objective(model, _counts(model), x, labels, STEP, KEY, base, x_view=view)
    for marginal_weight in (1.0, 2.0):
        loss = {**base, "mutual_information": {"weight": 3.0, "marginal_weight": marginal_weight}}
        total, (metrics, _) = objective(model, _counts(model), x, labels, STEP, KEY, loss, x_view=view)
        expected = -float(view_mutual_information(r, r_view, marginal_weight))
        assert float(metrics["mutual_information"]) == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert float(total) - float(without) == pytest.approx(3.0 * expected, rel=1e-4, abs=1e-5)


def test_pseudo_label_term_is_zero_when_no_prediction_reaches_the_threshold(model: SSVAE, batch) -> None:
    x, labels = batch
    config = _loss_config(pseudo_label_weight=1.0, pseudo_label_threshold=1.0)
    _, (metrics, _) = objective(model, _counts(model), x, labels, STEP, KEY, config, x_view=x)
    assert float(metrics["pseudo_label_share"]) == 0.0
    assert float(metrics["pseudo_label"]) == 0.0


def test_graph_label_term_is_the_supervised_loss_over_rows_with_a_propagated_label(
    model: SSVAE, batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_mean(monkeypatch)
    x, labels = batch
    counts = jnp.asarray(np.arange(12, dtype=np.float32).reshape(4, 3) % 5)
    propagated = jnp.asarray([2, -1, 0, 1, -1, -1, -1, -1], dtype=jnp.int32)
    config = _loss_config(graph_label_weight=3.0)
    total, (metrics, _) = objective(
        model, counts, x, labels, STEP, KEY, config, graph_labels=propagated
    )
    tau = np.asarray(model.head.tau(counts))
    r = np.asarray(jax.nn.softmax(model.encode(x).logits, axis=-1))
    rows, targets = np.array([0, 2, 3]), np.array([2, 0, 1])
    expected = np.mean(-np.log((r @ tau)[rows, targets]))
    assert float(metrics["graph_label"]) == pytest.approx(expected, rel=1e-5)
    without, _ = objective(model, counts, x, labels, STEP, KEY, config, graph_labels=None)
    assert float(total) - float(without) == pytest.approx(3.0 * expected, rel=1e-4)
