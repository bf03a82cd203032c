"""Conformance checks for classification heads.

A head is built with ``settings.num_components`` channels and, if it accepts them (a head
that needs channels raises ``ValueError``), without. Its state comes from ``init_state``
followed by ``update_state`` on a drawn labeled batch, so τ-like counts are not all zero.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st
from jaxtyping import Array, Float, Int, PyTree

from ssvae_core.modelling.components import ComponentFactory
from ssvae_core.modelling.protocols import AbstractHead
from ssvae_core.modelling.types import EncoderOutput
from ssvae_core.testing import strategies
from ssvae_core.testing._runner import (
    ConformanceError,
    NotApplicable,
    check,
    expect,
    expect_close,
    expect_identical,
    for_all,
)
from ssvae_core.testing._signatures import protocol_method
from ssvae_core.testing._subjects import (
    ConformanceSettings,
    Subject,
    build_checked,
    make_context,
    mix_rows,
    permute_channels,
    random_posterior,
)

HISTORY_SIZE = 8


def _outputs(
    head: AbstractHead, state: PyTree[Any], posterior: EncoderOutput, labels: Int[Array, " B"]
) -> dict[str, Float[Array, "..."]]:
    z = posterior.z_mean
    return {
        "predict_proba": head.predict_proba(posterior, z, state),
        "certainty": head.certainty(posterior, z, state),
        "supervised_loss": head.supervised_loss(posterior, z, labels, state),
    }


def _state(head: AbstractHead, posterior: EncoderOutput, labels: Int[Array, " B"]) -> PyTree[Any]:
    return head.update_state(head.init_state(), posterior, labels)


_outputs_jit = eqx.filter_jit(_outputs)
_state_jit = eqx.filter_jit(_state)
_class_map_jit = eqx.filter_jit(lambda head, state: head.class_map(state))


@eqx.filter_jit
def _update(
    head: AbstractHead, state: PyTree[Any], posterior: EncoderOutput, labels: Int[Array, " B"]
) -> PyTree[Any]:
    return head.update_state(state, posterior, labels)


@eqx.filter_jit
def _state_gradient(
    head: AbstractHead, state: PyTree[Any], posterior: EncoderOutput, labels: Int[Array, " B"]
) -> PyTree[Any]:
    params, static = eqx.partition(state, eqx.is_inexact_array)

    def total(params: PyTree[Any]) -> Float[Array, ""]:
        return jnp.sum(
            head.supervised_loss(posterior, posterior.z_mean, labels, eqx.combine(params, static))
        )

    return jax.grad(total)(params)


class HeadSubject(Subject):
    """A head with and (where it accepts that) without channels."""

    kind = "head"

    def __init__(
        self, label: str, factory: ComponentFactory, options: Any, settings: ConformanceSettings
    ):
        super().__init__(label, factory, options, settings)
        self.variants: dict[int, AbstractHead] = {}
        counts = [settings.num_components, 0]
        if settings.thorough:  # a head must also serve two and many channels
            counts[1:1] = [c for c in (2, strategies.LARGE_NUM_COMPONENTS) if c not in counts]
        for count in counts:
            context = make_context(settings, num_components=count)
            try:
                self.variants[count] = build_checked("head", factory, options, context, label)
            except ConformanceError as error:
                if count != 0 or not isinstance(error.__cause__, ValueError):
                    raise

    def state(self, count: int, example: dict[str, Any]) -> PyTree[Any]:
        """The head's state after one update with the drawn history batch."""
        history, labels = self.history(count, example["history_seed"])
        return _state_jit(self.variants[count], history, labels)

    def history(self, count: int, seed: int) -> tuple[EncoderOutput, Int[Array, " H"]]:
        """The labeled batch (from ``seed``) whose update gives the head a non-trivial state."""
        settings = self.settings
        labels = np.random.default_rng(seed).integers(-1, settings.num_classes, HISTORY_SIZE)
        return random_posterior(seed, HISTORY_SIZE, settings.latent_dim, count), jnp.asarray(
            labels, dtype=jnp.int32
        )

    def others(self, example: dict[str, Any]) -> EncoderOutput:
        """Replacement rows (from ``others_seed``) for the drawn posterior batch."""
        batch = example["labels"].shape[0]
        return random_posterior(
            example["others_seed"], batch, self.settings.latent_dim, example["num_components"]
        )

    def outputs(
        self,
        count: int,
        state: PyTree[Any],
        posterior: EncoderOutput,
        labels: np.ndarray,
        *,
        head: AbstractHead | None = None,
        jit: bool = True,
    ) -> dict[str, np.ndarray]:
        head = self.variants[count] if head is None else head
        outputs = _outputs_jit if jit else _outputs
        values = outputs(head, state, posterior, jnp.asarray(labels))
        return {name: np.asarray(value) for name, value in values.items()}

    def inputs(
        self,
        batch_sizes: tuple[int, ...] = strategies.BATCH_SIZES,
        *,
        counts: tuple[int, ...] | None = None,
        others: bool = False,
        permutation: bool = False,
        extreme: bool = False,
    ) -> st.SearchStrategy[dict[str, Any]]:
        """A variant's ``K``, a history batch for the state, and a batch of posteriors and labels."""
        settings = self.settings
        counts = tuple(self.variants) if counts is None else counts

        def draw(batch: int, count: int) -> st.SearchStrategy[dict[str, Any]]:
            fields = {
                "num_components": st.just(count),
                "history_seed": strategies.seeds(),
                "posterior": strategies.posteriors(
                    batch, settings.latent_dim, count, extreme=extreme
                ),
                "labels": strategies.labels(batch, settings.num_classes),
            }
            if others:
                fields |= {
                    "others_seed": strategies.seeds(),
                    "mask": strategies.row_masks(batch),
                }
            if permutation:
                fields["permutation"] = strategies.channel_permutations(count)
            return st.fixed_dictionaries(fields)

        return st.tuples(st.sampled_from(batch_sizes), st.sampled_from(counts)).flatmap(
            lambda bc: draw(*bc)
        )


@check(
    "head",
    "attributes",
    "num_classes equals the build context's",
    hint="num_classes set from a constant instead of the build context",
)
def _attributes(subject: HeadSubject) -> str:
    for head in subject.variants.values():
        expect(
            head.num_classes == subject.settings.num_classes,
            f"num_classes {head.num_classes} != context {subject.settings.num_classes}",
        )
    return "built with K = " + " and ".join(str(count) for count in subject.variants)


@check(
    "head",
    "signatures",
    "every AbstractHead method accepts and returns what its "
    "jaxtyping-annotated protocol signature says (checked by beartype)",
    hint="a method returning the wrong rank or dtype, or naming its parameters differently from the protocol",
)
def _signatures(subject: HeadSubject) -> None:
    methods = (
        "init_state",
        "predict_proba",
        "certainty",
        "supervised_loss",
        "update_state",
        "class_map",
    )
    calls = {
        count: {name: protocol_method(AbstractHead, name, head) for name in methods}
        for count, head in subject.variants.items()
    }

    def call_all(
        count: int,
        history: EncoderOutput,
        history_labels: Int[Array, " H"],
        posterior: EncoderOutput,
        labels: Int[Array, " B"],
    ) -> None:
        call = calls[count]
        state = call["update_state"](call["init_state"](), history, history_labels)
        call["predict_proba"](posterior, posterior.z_mean, state)
        call["certainty"](posterior, posterior.z_mean, state)
        call["supervised_loss"](posterior, posterior.z_mean, labels, state)
        call["class_map"](state)

    def body(example: dict[str, Any]) -> None:
        # Shapes and dtypes are all a signature states: trace abstractly, compile nothing.
        count = example["num_components"]
        eqx.filter_eval_shape(
            call_all,
            count,
            *subject.history(count, example["history_seed"]),
            example["posterior"],
            jnp.asarray(example["labels"]),
        )

    for_all(subject, subject.inputs(), body)


@check(
    "head",
    "state_structure",
    "update_state returns a finite state with the same tree "
    "structure, shapes and dtypes as init_state (a lax.scan carry and a checkpoint need that)",
    hint="update_state changing a count's dtype or shape (int counts, a dropped axis)",
)
def _state_structure(subject: HeadSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        head = subject.variants[example["num_components"]]
        initial, updated = head.init_state(), subject.state(example["num_components"], example)
        structure: Any = jax.tree.structure(initial)
        expect(
            jax.tree.structure(updated) == structure,
            f"state structure {jax.tree.structure(updated)} != {structure}",
        )
        for before, after in zip(jax.tree.leaves(initial), jax.tree.leaves(updated), strict=True):
            before, after = np.asarray(before), np.asarray(after)
            expect(
                (before.shape, before.dtype) == (after.shape, after.dtype),
                f"state leaf {after.dtype}{list(after.shape)} != initial {before.dtype}{list(before.shape)}",
            )
            if np.issubdtype(after.dtype, np.inexact):
                expect(np.all(np.isfinite(after)), "state is not finite")

    for_all(subject, subject.inputs((3,)), body)


@check(
    "head",
    "class_map_is_distribution",
    "class_map(state) is None (a head without a channel→label map) or a finite (K, Y) "
    "array, >= 0, each channel's row summing to 1",
    hint="counts normalised over the wrong axis, or a zero row divided by its zero sum",
)
def _class_map(subject: HeadSubject) -> str:
    num_classes = subject.settings.num_classes
    kinds: set[str] = set()

    def body(example: dict[str, Any]) -> None:
        count = example["num_components"]
        head = subject.variants[count]
        class_map = _class_map_jit(head, subject.state(count, example))
        if class_map is None:
            kinds.add("None")
            return
        kinds.add("τ")
        class_map = np.asarray(class_map)
        expect(
            class_map.shape == (count, num_classes),
            f"class_map has shape {class_map.shape}, expected ({count}, {num_classes})",
        )
        expect(
            np.all(np.isfinite(class_map)) and np.all(class_map >= 0),
            f"class_map is negative or not finite: {class_map}",
        )
        expect_close(class_map.sum(-1), np.ones(count), "row sums of class_map")

    for_all(subject, subject.inputs((3,)), body)
    return "no channel→label map" if kinds == {"None"} else ""


@check(
    "head",
    "predict_proba_is_distribution",
    "p(y|x) has shape (B, Y), is >= 0 and each row sums to 1",
    hint="probabilities normalised over the wrong axis, or exp of logits without softmax",
)
def _predict_proba(subject: HeadSubject) -> None:
    num_classes = subject.settings.num_classes

    def body(example: dict[str, Any]) -> None:
        count = example["num_components"]
        proba = subject.outputs(
            count, subject.state(count, example), example["posterior"], example["labels"]
        )["predict_proba"]
        batch = example["labels"].shape[0]
        expect(
            proba.shape == (batch, num_classes),
            f"shape {proba.shape}, expected ({batch}, {num_classes})",
        )
        expect(
            np.all(np.isfinite(proba)) and np.all(proba >= 0),
            f"p(y|x) is negative or not finite: {proba}",
        )
        expect_close(proba.sum(-1), np.ones(batch), "row sums of p(y|x)")

    for_all(subject, subject.inputs(extreme=True), body)


@check(
    "head",
    "ood_score_in_unit_interval",
    "certainty has shape (B,) and lies in [0, 1], so the OOD score 1 - certainty does too",
    hint="certainty taken from unnormalised scores instead of probabilities",
)
def _certainty(subject: HeadSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        count = example["num_components"]
        certainty = subject.outputs(
            count, subject.state(count, example), example["posterior"], example["labels"]
        )["certainty"]
        batch = example["labels"].shape[0]
        expect(
            certainty.shape == (batch,),
            f"certainty has shape {certainty.shape}, expected ({batch},)",
        )
        ood = 1.0 - certainty
        expect(np.all((ood >= -1e-6) & (ood <= 1 + 1e-6)), f"OOD score outside [0, 1]: {ood}")

    for_all(subject, subject.inputs(extreme=True), body)


@check(
    "head",
    "supervised_loss_finite",
    "supervised_loss has shape (B,) and is finite on every "
    "row, unlabeled (-1) rows included, since the caller masks them by multiplication",
    hint="the log of a zero probability (add the prior α₀ or use log_softmax), or unlabeled rows (label −1) indexed as a class",
)
def _supervised_finite(subject: HeadSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        count = example["num_components"]
        loss = subject.outputs(
            count, subject.state(count, example), example["posterior"], example["labels"]
        )["supervised_loss"]
        batch = example["labels"].shape[0]
        expect(
            loss.shape == (batch,), f"supervised_loss has shape {loss.shape}, expected ({batch},)"
        )
        expect(np.all(np.isfinite(loss)), f"supervised_loss is not finite: {loss}")

    for_all(subject, subject.inputs(extreme=True), body)


@check(
    "head",
    "supervised_loss_no_state_gradient",
    "the supervised loss passes no gradient into "
    "the head state (τ's soft counts are stop-gradient)",
    hint="the state read without jax.lax.stop_gradient",
)
def _no_state_gradient(subject: HeadSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        count = example["num_components"]
        head, state = subject.variants[count], subject.state(count, example)
        gradient = _state_gradient(
            head, state, example["posterior"], jnp.asarray(example["labels"])
        )
        for leaf in jax.tree.leaves(gradient):
            leaf = np.asarray(leaf)
            expect(
                not np.any(leaf != 0), f"gradient of the supervised loss w.r.t. the state: {leaf}"
            )

    for_all(subject, subject.inputs((3,)), body)


@check(
    "head",
    "unlabeled_rows_leave_state_unchanged",
    "update_state ignores rows labeled -1: changing their posteriors does not change the new state",
    hint="rows labeled −1 one-hot encoded as the last class instead of masked",
)
def _unlabeled_rows(subject: HeadSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        count = example["num_components"]
        head, state = subject.variants[count], subject.state(count, example)
        labels = jnp.asarray(example["labels"])
        mixed = mix_rows(example["labels"] >= 0, example["posterior"], subject.others(example))
        for before, after in zip(
            jax.tree.leaves(_update(head, state, example["posterior"], labels)),
            jax.tree.leaves(_update(head, state, mixed, labels)),
            strict=True,
        ):
            expect_close(after, before, "state after changing only the unlabeled rows")

    for_all(subject, subject.inputs((3, 8), others=True), body)


@check(
    "head",
    "per_example_independence",
    "each example's p(y|x), certainty and supervised loss "
    "do not depend on the other members of the batch",
    hint="a mean or normalisation over the batch axis in a per-example output",
)
def _per_example(subject: HeadSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        count, mask = example["num_components"], example["mask"]
        state = subject.state(count, example)
        alone = subject.outputs(count, state, example["posterior"], example["labels"])
        together = subject.outputs(
            count,
            state,
            mix_rows(mask, example["posterior"], subject.others(example)),
            example["labels"],
        )
        for name, value in alone.items():
            expect_close(together[name][mask], value[mask], f"{name} of the kept rows")

    for_all(subject, subject.inputs((3, 8), others=True), body)


@check(
    "head",
    "channel_permutation",
    "permuting the channels consistently (logits, the head's and "
    "its state's channel-indexed arrays) leaves p(y|x), certainty and the supervised loss unchanged "
    "and permutes the updated state",
    hint="channel-indexed state kept on an axis other than the leading one",
)
def _channel_permutation(subject: HeadSubject) -> None:
    counts = tuple(count for count in subject.variants if count >= 2)
    if not counts:
        raise NotApplicable("the head is not built with channels")

    def body(example: dict[str, Any]) -> None:
        count, permutation = example["num_components"], example["permutation"]
        head, state = subject.variants[count], subject.state(count, example)
        posterior, labels = example["posterior"], example["labels"]
        permuted_posterior = dataclasses.replace(posterior, logits=posterior.logits[:, permutation])
        permuted_head, permuted_state = (
            permute_channels(head, permutation),
            permute_channels(state, permutation),
        )
        before = subject.outputs(count, state, posterior, labels)
        after = subject.outputs(
            count, permuted_state, permuted_posterior, labels, head=permuted_head
        )
        for name, value in before.items():
            expect_close(
                after[name], value, f"{name} after permuting the channels", rtol=1e-4, atol=1e-5
            )
        updated = permute_channels(
            _update(head, state, posterior, jnp.asarray(labels)), permutation
        )
        permuted_updated = _update(
            permuted_head, permuted_state, permuted_posterior, jnp.asarray(labels)
        )
        for expected, actual in zip(
            jax.tree.leaves(updated), jax.tree.leaves(permuted_updated), strict=True
        ):
            expect_close(
                actual, expected, "updated state after permuting the channels", rtol=1e-4, atol=1e-5
            )

    for_all(subject, subject.inputs((3,), counts=counts, permutation=True), body)


@check(
    "head",
    "jit_matches_eager",
    "p(y|x), certainty and the supervised loss are the same under jit and eagerly",
    hint="Python control flow or NumPy on array values, computed once at trace time under jit",
)
def _jit_matches_eager(subject: HeadSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        count = example["num_components"]
        state = subject.state(count, example)
        compiled = subject.outputs(count, state, example["posterior"], example["labels"])
        eager = subject.outputs(count, state, example["posterior"], example["labels"], jit=False)
        for name, value in compiled.items():
            expect_close(value, eager[name], name, rtol=1e-4, atol=1e-5)

    for_all(subject, subject.inputs((3,)), body)


@check(
    "head",
    "repeat_calls_identical",
    "two eager calls with the same state, posteriors and labels give bit-identical p(y|x), "
    "certainty, supervised loss and state update",
    hint="NumPy or Python randomness (or a global counter) inside a call; draw from the key argument, if any",
)
def _repeat_calls(subject: HeadSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        count = example["num_components"]
        head = subject.variants[count]
        state = subject.state(count, example)
        posterior, labels = example["posterior"], jnp.asarray(example["labels"])
        for what, call in (
            ("outputs", lambda: _outputs(head, state, posterior, labels)),
            ("update_state", lambda: head.update_state(state, posterior, labels)),
        ):
            expect_identical(call(), call(), what)

    for_all(subject, subject.inputs((3,)), body)
