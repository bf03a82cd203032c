"""Channels that split when labels disagree: planning from hand-built responsibilities,
the copy into the target channel, and a warm retrain that separates two merged classes."""

from __future__ import annotations

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import config_from_dict
from ssvae_core.data.loading import load_dataset
from ssvae_core.labels.splitting import ChannelSplit, apply_splits, plan_splits


def _onehots(channels: list[int], num_channels: int, sharp: float = 0.9) -> np.ndarray:
    """Responsibilities putting ``sharp`` on each listed channel, the rest spread evenly."""
    r = np.full((len(channels), num_channels), (1 - sharp) / (num_channels - 1))
    r[np.arange(len(channels)), channels] = sharp
    return r


def test_two_classes_in_one_channel_split_into_the_least_used_free_channel() -> None:
    # class 0 in channel 0; classes 1 (two labels) and 2 (one label) both in channel 1
    r = _onehots([0, 0, 1, 1, 1], 4)
    labels = np.array([0, 0, 1, 1, 2])
    counts = np.array([[20.0, 0, 0], [0, 15.0, 5.0], [0, 0, 0], [0.1, 0, 0]])
    usage = np.array([0.3, 0.4, 0.2, 0.1])
    free = np.array([False, False, True, True])
    plan = plan_splits(r, labels, counts, usage, free)
    assert plan.unresolved == ()
    (split,) = plan.splits
    assert (split.source, split.target, split.staying, split.moving) == (1, 3, 1, 2)
    assert split.reason == "shared" and split.target_was == "free"
    assert split.mass == pytest.approx((1.8, 0.9))


def test_without_a_free_channel_the_second_channel_of_a_class_owning_two_is_freed() -> None:
    # class 0 owns channels 0 and 3 (3 less used); classes 1 and 2 share channel 1; class 2
    # owns no channel, so it takes channel 3 and class 0 keeps channel 0
    r = _onehots([0, 3, 1, 1, 1], 4)
    labels = np.array([0, 0, 1, 1, 2])
    counts = np.array([[20.0, 0, 0], [0, 15.0, 5.0], [0, 10.0, 0], [8.0, 0, 0]])
    usage = np.array([0.3, 0.3, 0.25, 0.15])
    plan = plan_splits(r, labels, counts, usage, np.zeros(4, bool))
    (split,) = plan.splits
    assert (split.source, split.target, split.moving, split.freed_from) == (1, 3, 2, 0)
    assert split.target_was == "redundant"


def test_a_channel_of_a_class_owning_one_is_never_freed() -> None:
    # as above, but class 2 owns channel 3 itself: nothing may be freed for it
    r = _onehots([0, 2, 1, 1, 1], 4)
    labels = np.array([0, 0, 1, 1, 2])
    counts = np.array([[20.0, 0, 0], [0, 15.0, 5.0], [6.0, 0, 0], [0, 0, 8.0]])
    plan = plan_splits(r, labels, counts, np.full(4, 0.25), np.zeros(4, bool))
    assert plan.splits == ()
    (left,) = plan.unresolved
    assert (left.channel, left.moving, left.classes) == (1, 2, (1, 2))


def test_no_conflict_plans_nothing() -> None:
    r = _onehots([0, 0, 1, 2, 2], 4)
    labels = np.array([0, 0, 1, 2, 2])
    counts = np.array([[20.0, 0, 0], [0, 10.0, 0], [0, 0, 20.0], [0, 0, 0]])
    plan = plan_splits(r, labels, counts, np.full(4, 0.25), np.array([False, False, False, True]))
    assert plan.splits == () and plan.unresolved == ()
    # soft responsibilities spilling a little onto a neighbour are no conflict either
    soft = np.array([[0.85, 0.15, 0, 0], [0.9, 0.1, 0, 0], [0.1, 0.9, 0, 0], [0, 0, 1.0, 0], [0, 0, 1.0, 0]])
    assert plan_splits(soft, labels, counts, np.full(4, 0.25), np.zeros(4, bool)).splits == ()


def test_a_newcomer_landing_in_an_owned_channel_moves_out_and_the_owner_stays() -> None:
    # τ gives channel 1 to class 1 (counts); the first label of class 2 lands there
    r = _onehots([0, 1, 1], 3, sharp=0.95)
    labels = np.array([0, 1, 2])
    r[2] = [0.05, 0.9, 0.05]
    counts = np.array([[20.0, 0, 0], [0, 30.0, 0], [0, 0, 0]])
    plan = plan_splits(r, labels, counts, np.array([0.5, 0.45, 0.05]), np.array([False, False, True]))
    (split,) = plan.splits
    assert (split.source, split.target, split.staying, split.moving) == (1, 2, 1, 2)
    assert split.reason == "newcomer"
    assert "'c' moves to free channel 2" in split.describe(["a", "b", "c"])


def test_an_unowned_class_is_served_before_one_that_owns_a_channel_elsewhere() -> None:
    # one free channel (3), two conflicts: class 2 (owning channel 2) in channel 0, and
    # class 3 (owning nothing) in channel 1 — class 3 gets the free channel
    r = _onehots([0, 0, 1, 1, 2, 0, 1], 4)
    labels = np.array([0, 0, 1, 1, 2, 2, 3])
    counts = np.array([[20.0, 0, 5.0, 0], [0, 20.0, 0, 4.0], [0, 0, 9.0, 0], [0, 0, 0, 0]])
    plan = plan_splits(r, labels, counts, np.full(4, 0.25), np.array([False, False, False, True]))
    (split,) = plan.splits
    assert (split.source, split.target, split.moving) == (1, 3, 3)
    (left,) = plan.unresolved
    assert (left.channel, left.moving) == (0, 2)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="responsibilities"):
        plan_splits(np.ones((2, 3)), np.zeros(2, int), np.ones((4, 2)), np.ones(4), np.ones(4, bool))
    with pytest.raises(ValueError, match="labels must lie"):
        plan_splits(np.ones((1, 4)), np.array([5]), np.ones((4, 2)), np.ones(4), np.ones(4, bool))


RAW = {
    "seed": 0,
    "model": {"latent_dim": 4, "embedding_dim": 4},
    "prior": {"name": "mixture", "num_components": 12, "learn_pi": True},
    "encoder": {"hidden": [32]},
    "decoder": {"hidden": [32]},
    "loss": {"graph_label": {"weight": 0.0}, "supervised": {"weight": 10.0}},
    "head": {"name": "tau", "initial_counts": 0.0},
    "train": {"steps": 40, "batch_size": 32, "log_every": 20},
}


def _model(raw: dict | None = None, input_shape: tuple[int, ...] = (8,)):
    from ssvae_core.modelling.model import build_model
    from ssvae_core.training import init_state

    config = config_from_dict(raw or RAW)
    model, _ = build_model(config, input_shape=input_shape, num_classes=3, key=jax.random.PRNGKey(0))
    return model, init_state(model, jax.random.PRNGKey(1))


CONV = {**RAW, "encoder": {"name": "conv", "channels": [4]}, "decoder": {"name": "conv", "channels": [4]}}


@pytest.mark.parametrize("raw", [RAW, CONV], ids=["dense", "conv"])
def test_the_copies_are_turned_apart_towards_each_class_s_labeled_examples(raw: dict) -> None:
    model, state = _model(raw, input_shape=(8, 8))
    x = jax.random.uniform(jax.random.PRNGKey(2), (12, 8, 8))
    labels = np.repeat([0, 1, 2], 4)
    split = ChannelSplit(3, 7, moving=2, staying=0, reason="shared", target_was="free", mass=(2.0, 1.0))
    new, _, _ = apply_splits(model, state.head_state, None, [split], jax.random.PRNGKey(3), inputs=np.asarray(x), labels=labels)
    logits = new.encode(x).logits
    gap = np.asarray(logits[:, 7] - logits[:, 3])
    # the moving class's examples lean to the target, the staying class's to the source
    assert gap[labels == 2].mean() - gap[labels == 0].mean() == pytest.approx(4.0, rel=1e-3)
    assert gap[labels == 2].mean() > 0 > gap[labels == 0].mean()
    assert gap[labels == 2].mean() == pytest.approx(-gap[labels == 0].mean(), abs=1e-3)
    # the other channels keep their logits
    others = [c for c in range(12) if c not in (3, 7)]
    np.testing.assert_allclose(logits[:, others], model.encode(x).logits[:, others], rtol=1e-6)


def test_a_split_copies_the_channel_so_both_copies_share_its_responsibility() -> None:
    model, state = _model()
    x = jax.random.normal(jax.random.PRNGKey(2), (16, 8))
    before = jax.nn.softmax(model.encode(x).logits, axis=-1)
    counts = state.head_state.at[4].set(jnp.array([3.0, 7.0, 0.0]))
    split = ChannelSplit(4, 9, moving=0, staying=1, reason="shared", target_was="free", mass=(1.0, 0.5))
    opt = {"mu": model}  # a moment tree of the model's shape
    new, new_counts, new_opt = apply_splits(model, counts, opt, [split], jax.random.PRNGKey(3))
    after = jax.nn.softmax(new.encode(x).logits, axis=-1)
    # the target's old share is given up; every other channel keeps its odds against
    # channel 0, and the two copies together hold what the source held
    others = [c for c in range(12) if c not in (4, 9)]
    odds_before, odds_after = before / before[:, :1], after / after[:, :1]
    np.testing.assert_allclose(odds_after[:, others], odds_before[:, others], rtol=1e-4)
    np.testing.assert_allclose(odds_after[:, 4] + odds_after[:, 9], odds_before[:, 4], rtol=0.05)
    np.testing.assert_allclose(after[:, 4], after[:, 9], rtol=0.1)
    assert not np.array_equal(new.embeddings[4], new.embeddings[9])  # perturbed copy
    np.testing.assert_allclose(new.embeddings[9], new.embeddings[4], atol=0.1)
    # π: the source's weight is halved between the copies
    pi = jax.nn.softmax(new.prior.pi_logits)
    np.testing.assert_allclose(pi[4], pi[9], rtol=1e-6)
    np.testing.assert_allclose(pi[4] / pi[0], 0.5, rtol=1e-5)
    # τ: the source goes to the staying class, the target to the moving one, at full mass
    np.testing.assert_allclose(new_counts[4], [0.0, 10.0, 0.0])
    np.testing.assert_allclose(new_counts[9], [10.0, 0.0, 0.0])
    # the moment tree's rows are copied exactly
    moments = new_opt["mu"].encoder.heads.logits.weight
    np.testing.assert_array_equal(moments[9], model.encoder.heads.logits.weight[4])


def _merged_classifier() -> tuple[SSVAEClassifier, np.ndarray]:
    """A classifier on digits 0, 1 and 7 (3 labels each) whose channel 0 was made to hold
    every example (its logit bias raised by 20): the three classes share one channel."""
    data = load_dataset("digits")
    keep = np.flatnonzero(np.isin(data.y, [0, 1, 7]))[:300]
    y_true = np.searchsorted([0, 1, 7], data.y[keep])
    y = np.full(len(keep), -1)
    for c in range(3):
        y[np.flatnonzero(y_true == c)[:3]] = c
    clf = SSVAEClassifier(config_from_dict(RAW)).fit(data.x[keep], y, num_classes=3, label_names=["0", "1", "7"])
    bias = clf.model.encoder.heads.logits.bias.at[0].add(20.0)
    clf.model = eqx.tree_at(lambda m: m.encoder.heads.logits.bias, clf.model, bias)
    return clf, y


def _channels_of_labeled(clf: SSVAEClassifier, y: np.ndarray) -> dict[int, set[int]]:
    """The channels (argmax q(c|x)) of each class's labeled examples."""
    r = clf.infer(clf.training_data.x[y >= 0]).responsibilities
    return {c: set(np.argmax(r[y[y >= 0] == c], axis=1).tolist()) for c in range(3)}


def test_a_retrain_gives_merged_classes_channels_of_their_own() -> None:
    clf, y = _merged_classifier()
    assert _channels_of_labeled(clf, y) == {0: {0}, 1: {0}, 2: {0}}
    clf.retrain(60)
    record = clf.channel_splits
    assert record["applied"] and record["copied"] == {"encoder": True, "decoder": True, "prior": True}
    assert {s["source"] for s in record["splits"]} == {0} and len(record["splits"]) == 2
    assert {s["moving"] for s in record["splits"]} | {record["splits"][0]["staying"]} == {"0", "1", "7"}
    after = _channels_of_labeled(clf, y)
    assert all(len(after[c]) == 1 for c in range(3))
    assert after[0].isdisjoint(after[1]) and after[1].isdisjoint(after[2]) and after[0].isdisjoint(after[2])
    for c in range(3):  # τ gives each class's channel to that class
        assert int(np.argmax(clf.tau[next(iter(after[c]))])) == c
    json.dumps(record)


def test_with_splitting_off_merged_classes_stay_merged() -> None:
    clf, y = _merged_classifier()
    clf.config = clf.config.replace(train=dataclasses.replace(clf.config.train, split_channels=False))
    clf.retrain(60)
    assert clf.channel_splits == {"applied": False, "why": "channel splitting is off"}
    after = _channels_of_labeled(clf, y)
    assert not after[1].isdisjoint(after[2])


def test_retrain_records_its_splits_in_the_round_and_the_report(
    tmp_path, synthetic: dict[str, np.ndarray]
) -> None:
    from ssvae_core.cli import main

    np.savez(tmp_path / "data.npz", x=synthetic["x"], y=synthetic["y"])
    out = tmp_path / "run"
    assert main([
        "train", "--data", str(tmp_path / "data.npz"), "--out", str(out), "--quiet", "--no-plots",
        "--labels-per-class", "2", "--steps", "10", "--set", "train.batch_size=8",
        "--set", "model.latent_dim=2", "--set", "prior.num_components=6",
        "--set", "encoder.hidden=[16]", "--set", "decoder.hidden=[16]",
        "--set", "loss.graph_label.weight=0", "--set", "train.log_every=5",
    ]) == 0
    assert main(["retrain", str(out), "--steps", "5", "--quiet", "--no-plots"]) == 0
    assert main(["retrain", str(out), "--steps", "5", "--quiet", "--no-plots", "--no-split"]) == 0
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert rounds[0]["channel_splits"] is None  # the first training splits nothing
    on, off = rounds[1]["channel_splits"], rounds[2]["channel_splits"]
    assert set(on) == {"applied", "splits", "unresolved", "copied"}
    assert on["copied"] == {"encoder": True, "decoder": True, "prior": True}
    assert off == {"applied": False, "why": "channel splitting is off"}
    assert json.loads((out / "report.json").read_text())["channel_splits"] == off
    assert "Channel splits at the start of this retrain: none." in (out / "report.md").read_text()


def test_a_prior_without_channels_has_nothing_to_split(synthetic: dict[str, np.ndarray]) -> None:
    raw = {**RAW, "prior": {"name": "standard"}, "head": {"name": "auto"}}
    clf = SSVAEClassifier(config_from_dict(raw)).fit(synthetic["x"], synthetic["partial"])
    clf.retrain(5)
    assert clf.channel_splits == {"applied": False, "why": "the SoftmaxHead head has no channels to split"}


def test_an_encoder_without_posterior_heads_keeps_its_logits_and_only_tau_is_reassigned() -> None:
    import equinox as eqx

    from ssvae_core.labels.splitting import split_support
    from ssvae_core.modelling.protocols import AbstractEncoder
    from ssvae_core.modelling.types import EncoderOutput

    class BareEncoder(AbstractEncoder):
        input_shape: tuple[int, ...] = eqx.field(static=True)
        latent_dim: int = eqx.field(static=True)
        num_components: int = eqx.field(static=True)
        linear: eqx.nn.Linear

        def __call__(self, x: jax.Array) -> EncoderOutput:
            out = self.linear(x.reshape(-1))
            return EncoderOutput(z_mean=out[:4], z_log_var=out[4:8] * 0, logits=out[8:])

    model, state = _model()
    bare = BareEncoder((8,), 4, 12, eqx.nn.Linear(8, 20, key=jax.random.PRNGKey(5)))
    model = eqx.tree_at(lambda m: m.encoder, model, bare)
    assert split_support(model) == {"encoder": False, "decoder": True, "prior": True}
    split = ChannelSplit(2, 5, moving=1, staying=0, reason="shared", target_was="free", mass=(1.0, 1.0))
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(6), (6, 8)))
    new, counts, _ = apply_splits(
        model, state.head_state, None, [split], jax.random.PRNGKey(3), inputs=x, labels=np.repeat([0, 1], 3)
    )
    np.testing.assert_array_equal(new.encode(x).logits, model.encode(x).logits)
    assert int(np.argmax(counts[5])) == 1 and int(np.argmax(counts[2])) == 0
