"""The Python API: build from a config, fit on arrays, predict, score, encode, save and load."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import numpy as np
from numpy.typing import ArrayLike

from ssvae_core.config import Config, check_seed, default_config, resolve_components
from ssvae_core.data.loading import Dataset, from_arrays
from ssvae_core.data.neighbours import exact_neighbours_up_to
from ssvae_core.errors import CheckpointError, ConfigError, DataError, SSVAEError
from ssvae_core.labels.active import QueryResult, query, query_key
from ssvae_core.labels.labelspace import channel_table, claim_for_classes
from ssvae_core.labels.splitting import apply_splits, plan_splits, split_support
from ssvae_core.labels.store import check_distinct_names, label_name
from ssvae_core.modelling.inference import Inference, infer
from ssvae_core.modelling.model import SSVAE, build_model
from ssvae_core.modelling.objective import Objective, build_objective
from ssvae_core.registry import Registry, default_registry
from ssvae_core.runs.calibration import Calibration, fit_calibration
from ssvae_core.runs.metrics import (
    accuracy,
    channel_diagnostics,
    clustering_metrics,
    confusion_matrix,
    expected_calibration_error,
    ood_table,
    reliability_table,
)
from ssvae_core.runs.ood import (
    BACKGROUND_NOISE,
    DEFAULT_SCORE,
    NEEDS_BACKGROUND,
    OOD_SCORES,
    Background,
    OODReference,
    background_path,
    check_fpr,
    check_output,
    check_score,
    no_background,
    ood_reference,
    ood_scores,
    p_values,
    score_inputs,
    train_background,
)
from ssvae_core.training import (
    MetricSink,
    Trainer,
    TrainState,
    data_fits_device,
    init_state,
    training_arrays,
)
from ssvae_core.training.checkpoint import load_checkpoint, save_checkpoint

CheckpointCallback = Callable[["SSVAEClassifier"], None]
# evaluate(classifier, seconds): metrics of the state reached after ``seconds`` of training
EvaluateCallback = Callable[["SSVAEClassifier", float], dict[str, float]]


class SSVAEClassifier:
    """A semi-supervised VAE used as a classifier.

    >>> clf = SSVAEClassifier(config).fit(x, y)      # y = -1 marks unlabeled rows
    >>> clf.predict_proba(x_new); clf.ood_score(x_new); clf.encode(x_new)
    >>> clf.save("model.ckpt"); SSVAEClassifier.load("model.ckpt")
    """

    def __init__(self, config: Config | None = None, *, registry: Registry | None = None):
        if config is not None and not isinstance(config, Config):
            hint = (
                "; build one from a dict with ssvae_core.config.config_from_dict"
                if isinstance(config, dict)
                else ""
            )
            raise ConfigError(
                f"config must be a ssvae_core.config.Config (or None for the defaults), "
                f"got {type(config).__name__}{hint}"
            )
        self.registry = registry or default_registry()
        self.config = resolve_components(config or default_config(self.registry), self.registry)
        self.model: SSVAE | None = None
        self.state: TrainState | None = None
        self.opt_state: Any = None
        self.input_shape: tuple[int, ...] = ()
        self.label_names: tuple[str, ...] = ()
        self.history: list[dict[str, float]] = []
        self.training_data: Dataset | None = None
        # the channels each class added after training claimed (add_labels)
        self.claims: dict[str, tuple[int, ...]] = {}
        # what the last retrain's channel splitting did (split_channels())
        self.channel_splits: dict[str, Any] | None = None
        # the training data's OOD scores, for the blends and p-values (ood_reference())
        self._ood_reference: OODReference | None = None
        # the background model of the ratio OOD scores (fit_background()) and, on a
        # background model itself, its noise rate and training time
        self.background: SSVAEClassifier | None = None
        self.background_info: dict[str, float] | None = None
        # the calibration of p(y|x) fitted after the last training (ssvae_core.runs.calibration)
        self.calibration: Calibration | None = None

    def fit(
        self,
        x: ArrayLike | Dataset,
        y: ArrayLike | None = None,
        *,
        num_classes: int | None = None,
        label_names: Sequence[str] | None = None,
        sinks: Sequence[MetricSink] = (),
        on_checkpoint: CheckpointCallback | None = None,
        evaluate: EvaluateCallback | None = None,
        model: SSVAE | None = None,
    ) -> SSVAEClassifier:
        """Train from scratch on every row of ``x``; rows whose label is ``-1`` are unlabeled.
        With no label at all (``y`` omitted or all ``-1``; pass ``num_classes`` or
        ``label_names``) the model trains on the unlabeled data alone: its channels form
        without labels, and ``query`` picks the first examples to label.

        Each sink — ``sink(step, metrics)`` — receives the mean metrics of each chunk of
        ``train.log_every`` steps (``history`` keeps them too).
        ``on_checkpoint(classifier)`` is called every ``train.checkpoint_every`` steps (at
        the end of the chunk that reaches them) with the classifier holding the training
        state reached, e.g. ``lambda c: c.save("model.ckpt")``. With ``train.eval_every``
        set, ``evaluate(classifier, seconds)`` is called every that many steps (and at the
        last step; ``seconds``: the training time of this call so far, the sum of the
        chunks' ``seconds``) and its floats join that chunk's metrics, e.g. held-out accuracy.

        ``model`` is the untrained model to start from, as ``initial_model`` builds it for
        the same data (built once up front, say, so that a config error surfaces before
        anything else happens); by default it is built here.
        """
        dataset = self._training_data(x, y, num_classes, label_names)
        if model is None:
            model = self.initial_model(dataset)
        elif not isinstance(model, SSVAE):
            raise SSVAEError(f"model must be an SSVAE built by initial_model, got {type(model).__name__}")
        state_key = jax.random.split(jax.random.PRNGKey(self.config.seed))[1]
        self.model = model
        self.state = init_state(model, state_key)
        self.input_shape = dataset.sample_shape
        self.label_names = dataset.label_names
        self.opt_state = self._trainer().init_opt_state(model)
        self.history = []
        self.training_data = dataset
        return self._train(dataset, self.config.train.steps, sinks, on_checkpoint, evaluate)

    def initial_model(self, dataset: Dataset) -> SSVAE:
        """The untrained model ``fit`` starts from on ``dataset`` (its input shape, classes
        and data-dependent initialisation); a component that cannot be built for it is a
        ``ConfigError``."""
        model_key = jax.random.split(jax.random.PRNGKey(self.config.seed))[0]
        model, _ = build_model(
            self.config,
            input_shape=dataset.sample_shape,
            num_classes=dataset.num_classes,
            key=model_key,
            data=dataset.x,
            registry=self.registry,
        )
        return model

    def resume(
        self,
        x: ArrayLike | Dataset,
        y: ArrayLike | None = None,
        *,
        until_step: int,
        sinks: Sequence[MetricSink] = (),
        on_checkpoint: CheckpointCallback | None = None,
        evaluate: EvaluateCallback | None = None,
    ) -> SSVAEClassifier:
        """Continue training a fitted or loaded classifier up to ``until_step``.

        Parameters, optimiser state, τ counts and the RNG key carry on, so training 10 steps,
        saving, loading and resuming to 20 on the same data gives the same model as 20
        steps in one go. ``y`` may hold labels the first run did not have: they join the
        labeled pool (the compiled step is reused; only values change). ``sinks``,
        ``on_checkpoint`` and ``evaluate`` work as in ``fit``.
        """
        _, state = self._fitted()
        dataset = self._training_data(x, y, len(self.label_names), self.label_names)
        if dataset.sample_shape != self.input_shape:
            raise DataError(
                f"inputs have sample shape {dataset.sample_shape}, but the model was trained "
                f"on {self.input_shape}"
            )
        if until_step <= int(state.step):
            raise ConfigError(
                f"train.steps must exceed the {int(state.step)} steps already taken to resume, "
                f"got {until_step}"
            )
        self.config = self.config.replace(
            train=dataclasses.replace(self.config.train, steps=until_step)
        )
        self.training_data = dataset
        return self._train(dataset, until_step, sinks, on_checkpoint, evaluate)

    def add_labels(
        self, indices: ArrayLike, labels: Sequence[str | int]
    ) -> tuple[str, ...]:
        """Label rows of the training data (``training_data``) after training.

        ``indices`` are rows of the data passed to ``fit`` (or ``resume``);
        ``labels`` are label names — a name the model has not seen adds a class, which
        claims 1–3 free channels where its labeled examples sit (τ grows a column; old
        classes keep theirs) — or indices of known classes. A row already labeled
        differently, a row given two labels, an unknown index or an unknown class index
        raise ``DataError`` and change nothing. Returns the names of the classes
        added. ``retrain`` then trains on the new labels.
        """
        self._fitted()
        if self.training_data is None:
            raise SSVAEError(
                "this classifier holds no training data (it was loaded from a checkpoint); "
                "call resume(x, y) with the data first, or label a run directory with "
                "`ssvae label`"
            )
        data = self.training_data
        rows, names = self._label_request(indices, labels, data)
        new_names = tuple(dict.fromkeys(name for name in names if name not in self.label_names))
        labeled = {self.label_names[int(c)] for c in np.unique(data.y[data.y >= 0])}
        # new classes, and known classes receiving their first labels, claim free channels
        claiming = tuple(dict.fromkeys(name for name in names if name not in labeled))
        if claiming:
            self._claim_channels(data.x[rows], names, claiming, new_names)
        all_names = self.label_names
        y = data.y.copy()
        y[rows] = [all_names.index(name) for name in names]
        self.training_data = from_arrays(
            data.x, y, name=data.name, num_classes=len(all_names), label_names=all_names,
            unlabeled_classes=data.unlabeled_classes,
        )
        return new_names

    def _label_request(
        self, indices: ArrayLike, labels: Sequence[str | int], data: Dataset
    ) -> tuple[np.ndarray, list[str]]:
        """Validated ``(rows, label names)`` of an ``add_labels`` call."""
        try:
            rows = np.asarray(indices)
        except (TypeError, ValueError):
            raise DataError("indices must be a sequence of integers") from None
        if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
            raise DataError(f"indices must be a 1-D sequence of integers; got {indices!r:.80}")
        if isinstance(labels, (str, bytes)) or len(labels) != rows.size:
            raise DataError(
                f"give one label per index: {rows.size} indices, "
                f"{1 if isinstance(labels, (str, bytes)) else len(labels)} labels"
            )
        n = data.x.shape[0]
        names: list[str] = []
        for row, label in zip(rows.tolist(), labels, strict=True):
            if not 0 <= row < n:
                raise DataError(f"index {row} is out of range; the training data have {n} rows")
            if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
                if not 0 <= label < len(self.label_names):
                    raise DataError(
                        f"class index {label} is unknown; the model has {len(self.label_names)} "
                        "classes (give a name to add a class)"
                    )
                names.append(self.label_names[label])
            elif isinstance(label, str):
                names.append(label_name(label))
            else:
                raise DataError(f"a label must be a class name or a class index; got {label!r:.60}")
        check_distinct_names(names, self.label_names)
        given: dict[int, str] = {}
        for row, name in zip(rows.tolist(), names, strict=True):
            if given.setdefault(row, name) != name:
                raise DataError(f"row {row} is given two labels, {given[row]!r} and {name!r}")
            old = int(data.y[row])
            if old >= 0 and self.label_names[old] != name:
                raise DataError(
                    f"row {row} is already labeled {self.label_names[old]!r}; cannot relabel it {name!r}"
                )
        return rows.astype(np.int64), names

    def _claim_channels(
        self,
        x: np.ndarray,
        names: Sequence[str],
        claiming: tuple[str, ...],
        new_names: tuple[str, ...],
    ) -> None:
        """Give each class in ``claiming`` free channels where its examples ``x`` sit (see
        ``ssvae_core.labels.labelspace``), adding ``new_names`` to the label space."""
        model, state = self._fitted()
        data = self.training_data
        assert data is not None
        usage = np.mean(infer(model, state.head_state, data.x).responsibilities, axis=0)
        free = model.head.free_channels(state.head_state, jax.numpy.asarray(usage))
        if free is not None and not np.any(data.y >= 0):
            free = np.ones(np.shape(free), dtype=bool)  # trained without labels: no label owns a channel
        if free is None:
            if not new_names:
                return  # a head without channels learns a known class from its labels alone
            raise DataError(
                f"the {type(model.head).__name__} head has no channels to give the new classes "
                f"{', '.join(map(repr, new_names))}; use the τ head"
            )
        responsibilities = infer(model, state.head_state, x).responsibilities
        # a known class (τ has its column) finding no free channel learns from its labels alone
        known = [name for name in claiming if name not in new_names]
        claims = claim_for_classes(responsibilities, names, claiming, np.asarray(free), optional=known)
        all_names = (*self.label_names, *new_names)
        owners = {all_names.index(name): chosen for name, chosen in zip(claiming, claims, strict=True) if chosen}
        try:
            head, head_state = model.head.assign_channels(state.head_state, len(all_names), owners)
        except NotImplementedError as error:
            raise DataError(str(error)) from None
        grown = eqx.tree_at(lambda m: m.head, model, head)
        self.opt_state = _carry_opt_state(self.opt_state, self._trainer_for(grown).init_opt_state(grown))
        self.model = grown
        self.state = dataclasses.replace(state, head_state=head_state)
        self.label_names = all_names
        self.claims.update((name, chosen) for name, chosen in zip(claiming, claims, strict=True) if chosen)

    def retrain(
        self,
        steps: int,
        *,
        sinks: Sequence[MetricSink] = (),
        on_checkpoint: CheckpointCallback | None = None,
        evaluate: EvaluateCallback | None = None,
        split_channels: bool | None = None,
    ) -> SSVAEClassifier:
        """Continue training for ``steps`` more steps on ``training_data`` with every
        label added so far (warm: parameters, optimiser state and τ counts carry on; adding
        labels of known classes compiles nothing new).

        With ``train.split_channels`` on (the default; ``split_channels`` overrides it for
        this call), ``split_channels`` first splits every channel whose labeled
        examples disagree; ``channel_splits`` records what it did."""
        _, state = self._fitted()
        if self.training_data is None:
            raise SSVAEError(
                "this classifier holds no training data (it was loaded from a checkpoint); "
                "call resume(x, y, until_step=...) instead"
            )
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ConfigError(f"steps must be a positive integer; got {steps!r}")
        split = self.config.train.split_channels if split_channels is None else split_channels
        self.channel_splits = (
            self.split_channels() if split else {"applied": False, "why": "channel splitting is off"}
        )
        return self.resume(
            self.training_data, until_step=int(state.step) + int(steps),
            sinks=sinks, on_checkpoint=on_checkpoint, evaluate=evaluate,
        )

    def split_channels(self) -> dict[str, Any]:
        """Split the channels where labeled examples of ``training_data`` disagree.

        A channel where labeled examples of two or more classes sit, or where labels land
        in a channel τ gives to another class, is copied into a free channel (or a
        further channel of a class that owns two) for the class with less labeled mass
        there; τ's counts are reseeded so each copy belongs to one class (see
        ``ssvae_core.labels.splitting`` and ``docs/maths.md``). Returns the record:
        ``applied``, ``splits`` and ``unresolved`` conflicts (each with a ``why``), and
        ``copied`` (which parts of the model the copy covers); a head without channels
        returns ``applied: False`` and changes nothing.
        """
        model, state = self._fitted()
        data = self.training_data
        if data is None:
            raise SSVAEError("this classifier holds no training data to find conflicting labels in")
        labeled = np.flatnonzero(data.y >= 0)
        if model.num_components == 0 or np.shape(state.head_state) != (model.num_components, len(self.label_names)):
            return {"applied": False, "why": f"the {type(model.head).__name__} head has no channels to split"}
        responsibilities = np.asarray(infer(model, state.head_state, data.x).responsibilities)
        usage = responsibilities.mean(axis=0)
        free = model.head.free_channels(state.head_state, jax.numpy.asarray(usage))
        plan = plan_splits(
            responsibilities[labeled], data.y[labeled], np.asarray(state.head_state), usage, np.asarray(free)
        )
        if plan.splits:
            key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), int(state.step))
            model, head_state, self.opt_state = apply_splits(
                model, state.head_state, self.opt_state, plan.splits, key,
                inputs=data.x[labeled], labels=data.y[labeled],
            )
            self.model = model
            self.state = dataclasses.replace(state, head_state=head_state)
        return {
            "applied": bool(plan.splits),
            "splits": [split.to_dict(self.label_names) for split in plan.splits],
            "unresolved": [conflict.to_dict(self.label_names) for conflict in plan.unresolved],
            "copied": split_support(model),
        }

    def query(
        self,
        n: int,
        strategy: str = "entropy",
        *,
        options: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> QueryResult:
        """The ``n`` unlabeled rows of ``training_data`` to label next, best first.

        ``strategy`` names a registered acquisition (``ssvae plugins`` lists them and their
        options); ``options`` sets its options. Strategies that draw random numbers use
        ``seed`` (default: the config's seed, folded with the training step). Label the
        rows with ``add_labels``, then ``retrain``.
        """
        if seed is not None:
            check_seed(seed, "seed")
        model, state = self._fitted()
        if self.training_data is None:
            raise SSVAEError(
                "this classifier holds no training data (it was loaded from a checkpoint); "
                "call resume(x, y, ...) with the data first, or query a run directory with "
                "`ssvae query`"
            )
        data = self.training_data
        return query(
            model, state.head_state, data.x, data.y >= 0, n,
            strategy=strategy, options=options, input_shape=self.input_shape,
            key=query_key(self.config.seed if seed is None else seed, int(state.step)),
            registry=self.registry, calibration=self._calibration(), ood=self.ood_score,
        )

    def _training_data(
        self,
        x: ArrayLike | Dataset,
        y: ArrayLike | None,
        num_classes: int | None,
        label_names: Sequence[str] | None,
    ) -> Dataset:
        if isinstance(x, Dataset) and y is not None:
            raise DataError("pass labels either inside the Dataset or as y, not both")
        dataset = x if isinstance(x, Dataset) else from_arrays(
            x, y, num_classes=num_classes, label_names=label_names
        )
        # No label at all trains label-free: the channels form from the unlabeled data alone.
        labeled = np.unique(dataset.y[dataset.y >= 0])
        if labeled.size == 1:
            raise DataError(
                f"training needs labeled examples of at least two classes; y labels only "
                f"class {int(labeled[0])} ({dataset.label_names[int(labeled[0])]!r})"
            )
        if dataset.num_classes < 2:
            raise DataError(
                f"training needs at least two classes; got num_classes={dataset.num_classes} "
                "(pass num_classes, label_names or labels of two or more classes)"
            )
        return dataset

    def _objective(self) -> Objective:
        model, _ = self._fitted()
        return self._trainer_for(model).spec.objective

    def _trainer(self) -> Trainer:
        model, _ = self._fitted()
        return self._trainer_for(model)

    def _trainer_for(self, model: SSVAE) -> Trainer:
        objective = build_objective(
            self.config,
            model,
            input_shape=self.input_shape,
            num_classes=model.head.num_classes,
            registry=self.registry,
        )
        return Trainer.for_model(self.config, model, objective)

    def _train(
        self,
        dataset: Dataset,
        until_step: int,
        sinks: Sequence[MetricSink],
        on_checkpoint: CheckpointCallback | None = None,
        evaluate: EvaluateCallback | None = None,
    ) -> SSVAEClassifier:
        model, state = self._fitted()
        trainer = self._trainer()
        every = self.config.train.checkpoint_every
        eval_every = self.config.train.eval_every
        last_eval = [int(state.step)]
        seconds = [0.0]

        def held_out(model: SSVAE, state: TrainState, step: int, metrics: dict[str, float]) -> dict[str, float]:
            seconds[0] += metrics.get("seconds", 0.0)
            due = eval_every > 0 and (step // eval_every > last_eval[0] // eval_every or step >= until_step)
            if evaluate is None or not due:
                return {}
            last_eval[0] = step
            self.model, self.state = model, state
            return {name: float(value) for name, value in evaluate(self, seconds[0]).items()}

        def record(step: int, metrics: dict[str, float]) -> None:
            self.history.append({"step": step, **metrics})

        last = [int(state.step)]  # the step reached so far (the arrays are donated)

        def reached(model: SSVAE, state: TrainState, opt_state: Any) -> None:
            self.model, self.state, self.opt_state = model, state, opt_state
            step = int(state.step)
            if on_checkpoint is not None and every > 0 and step // every > last[0] // every:
                on_checkpoint(self)
            last[0] = step

        with exact_neighbours_up_to(self.config.data.exact_neighbours):
            arrays = training_arrays(
                dataset.x,
                dataset.y,
                objective=trainer.spec.objective,
                num_classes=dataset.num_classes,
                balance_labels=self.config.train.balance_labels,
                on_device=data_fits_device(dataset.x, self.config.train.data_on_device),
            )
        self.model, self.state, self.opt_state = trainer.train(
            arrays,
            model,
            state,
            self.opt_state,
            until_step=until_step,
            sinks=[record, *sinks],
            on_chunk=reached,
            extra_metrics=held_out,
        )
        self.calibration = self._fit_calibration(dataset)
        return self

    def _fit_calibration(self, dataset: Dataset) -> Calibration:
        """The calibration of ``config.calibration`` fitted on ``dataset`` for the model
        reached (``ssvae_core.runs.calibration``)."""
        model, state = self._fitted()
        with exact_neighbours_up_to(self.config.data.exact_neighbours):
            return fit_calibration(
                self.config.calibration,
                dataset.x,
                dataset.y,
                dataset.num_classes,
                lambda x: infer(model, state.head_state, x).probabilities,
                self.config.augment,
                graph_labels=self.config.term_options("graph_label").weight > 0,
                step=int(state.step),
            )

    def _fitted(self) -> tuple[SSVAE, TrainState]:
        if self.model is None or self.state is None:
            raise SSVAEError("this SSVAEClassifier is not fitted yet; call fit() or load() first")
        return self.model, self.state

    def _inputs(self, x: ArrayLike | Dataset) -> np.ndarray:
        dataset = x if isinstance(x, Dataset) else from_arrays(x)
        if dataset.sample_shape != self.input_shape:
            raise DataError(
                f"inputs have sample shape {dataset.sample_shape}, but the model was trained "
                f"on {self.input_shape}"
            )
        return dataset.x

    def infer(self, x: ArrayLike | Dataset, *, calibrated: bool = True) -> Inference:
        """Every per-example output at once (probabilities, certainty, latents, ...);
        the probabilities calibrated (``calibration``) unless ``calibrated`` is off."""
        model, state = self._fitted()
        return infer(model, state.head_state, self._inputs(x), calibration=self._calibration(calibrated))

    def predict_proba(self, x: ArrayLike | Dataset, *, calibrated: bool = True) -> np.ndarray:
        """``p(y|x)``, shape ``(N, num_classes)``; rows sum to 1. Calibrated after training
        (``calibration``, ``docs/maths.md``) unless ``calibrated`` is off; the most
        probable class is the same either way."""
        return self.infer(x, calibrated=calibrated).probabilities

    def _calibration(self, calibrated: bool = True) -> Calibration | None:
        """``calibration`` where it was fitted for the model's current step."""
        _, state = self._fitted()
        current = self.calibration
        if not calibrated or current is None or current.step != int(state.step):
            return None
        return current

    def predict(self, x: ArrayLike | Dataset) -> np.ndarray:
        """The most probable class of each example."""
        return self.infer(x).predictions

    def ood_score(
        self, x: ArrayLike | Dataset, score: str = DEFAULT_SCORE, *, as_: str = "score"
    ) -> np.ndarray:
        """Out-of-distribution score per example; higher is more likely out of distribution.

        ``score`` (``docs/maths.md``, "Out-of-distribution scores"): ``"blend_excess"``
        (the default, chosen on validation data) Fisher's combination of the certainty and
        excess scores' tail probabilities under the training data, as ``−ln p``;
        ``"certainty"`` ``1 − max_c r_c(x) max_y τ_{c,y}`` (τ head) or ``1 − max_y p(y|x)``;
        ``"likelihood"`` the reconstruction NLL ``L(x) = Σ_c r_c(x) NLL(x | μ(x), c)``
        (nats); ``"complexity"`` ``L(x)`` minus the input's PNG code length (nats);
        ``"excess"`` ``L(x)`` minus the NLL of a perfect reconstruction (nats);
        ``"ratio"`` ``L(x)`` minus the background model's (``fit_background``);
        ``"blend"`` (in [0, 1]), ``"blend_complexity"`` and ``"blend_ratio"`` the certainty
        score combined with the likelihood, complexity or ratio score like the default.

        ``as_="p_value"`` gives instead the share of training examples scoring at least as
        high (``ood_reference``; an exponential tail beyond the largest): flagging the
        inputs with a p-value ≤ α flags about a share α of in-distribution inputs.
        """
        check_score(score)
        check_output(as_)
        model, state = self._fitted()
        needs_reference = as_ == "p_value" or score.startswith("blend")
        reference = self.ood_reference((score,), own=as_ == "p_value") if needs_reference else None
        inputs = score_inputs(model, state.head_state, self._inputs(x), (score,), background=self._background())
        values = ood_scores(inputs, reference, (score,))[score]
        if as_ == "p_value":
            assert reference is not None
            return p_values(values, reference, score)
        return values

    def _background(self) -> Background | None:
        """The background model for scoring, if there is one."""
        if self.background is None:
            return None
        model, state = self.background._fitted()
        info = self.background.background_info or {}
        return Background(
            model=model, head_state=state.head_state,
            noise=float(info.get("noise", BACKGROUND_NOISE)), train_time_s=float(info.get("train_time_s", 0.0)),
        )

    def fit_background(
        self, *, noise: float = BACKGROUND_NOISE, steps: int | None = None
    ) -> SSVAEClassifier:
        """Train the background model of the ``ratio`` OOD scores: a classifier of the same
        config (``steps`` training steps if given) on ``training_data`` with a share
        ``noise`` of its pixels replaced by uniform noise. The model itself is untouched;
        the background goes into ``background`` and into checkpoints (``save``)."""
        self._fitted()
        if self.training_data is None:
            raise SSVAEError("fit_background trains on the training data; fit (or resume) first")
        self.background = train_background(self, self.training_data, noise=noise, steps=steps)
        if self._ood_reference is not None and "ratio" not in self._ood_reference.scores:
            self._ood_reference = None  # recomputed with the ratio scores
        return self

    def ood_reference_complete(self) -> bool:
        """Whether the kept reference holds every score the classifier can compute."""
        names = [name for name in OOD_SCORES if self.background is not None or name not in NEEDS_BACKGROUND]
        return self._ood_reference is not None and self._ood_reference.has(names, own=True)

    def ood_reference(self, names: Sequence[str] = (), *, own: bool = False) -> OODReference:
        """The training data's OOD scores (every score the model can compute), which the
        blends and the p-values compare an input with: computed from ``training_data``
        (a seeded subsample of at most 2,000 rows) for the current model, kept in
        checkpoints by ``save``. ``names``: the scores the caller needs, ``own`` whether
        their own distributions too (for p-values); a kept reference that lacks them is
        recomputed, and without training data that is an ``SSVAEError``.
        """
        model, state = self._fitted()
        step, classes = int(state.step), len(self.label_names)
        cached = self._ood_reference
        if cached is not None and (cached.step, cached.classes) == (step, classes) and cached.has(names, own=own):
            return cached
        if any(name in NEEDS_BACKGROUND for name in names) and self.background is None:
            raise no_background()
        if self.training_data is None:
            raise SSVAEError(
                "the OOD blends and p-values need the training data's scores, and this classifier "
                "has neither (its checkpoint was saved without them); call resume(x, y, ...) "
                "with the training data, or evaluate the run directory with `ssvae evaluate`"
            )
        self._ood_reference = ood_reference(
            model, state.head_state, self.training_data.x, step=step, classes=classes,
            background=self._background(),
        )
        return self._ood_reference

    def encode(self, x: ArrayLike | Dataset) -> tuple[np.ndarray, np.ndarray]:
        """``(z_mean, responsibilities)``; responsibilities have width 0 without channels."""
        result = self.infer(x)
        return result.z_mean, result.responsibilities

    @property
    def tau(self) -> np.ndarray | None:
        """The channel→label map ``τ`` (``K × Y``), or ``None`` for a head without it."""
        model, state = self._fitted()
        class_map = model.head.class_map(state.head_state)
        return None if class_map is None else np.asarray(class_map)

    def evaluate(
        self,
        x: ArrayLike | Dataset,
        y: ArrayLike | None = None,
        *,
        ood: ArrayLike | Dataset | None = None,
        scores: Sequence[str] = OOD_SCORES,
        fpr: float | None = None,
    ) -> dict[str, Any]:
        """Accuracy, ECE, confusion, reliability, reconstruction error and channel diagnostics
        on labeled data, of the calibrated ``p(y|x)``; ``calibration`` says how it was
        calibrated (``calibration``; ``method`` ``"none"`` without one) and gives
        ``ece_uncalibrated``, the ECE of the head's own ``p(y|x)``. With ``ood`` (inputs
        that are out of distribution, the positives) also ``ood_auroc`` (the certainty
        score's AUROC) and ``ood``: AUROC, FPR at 95 % TPR and AUPR (OOD positive) per score,
        ``{"certainty": {"auroc": …, "fpr95": …, "aupr": …}, "likelihood": …, …}`` for the
        ``scores`` named (the blends only where ``ood_reference`` is available, the ratio
        scores only with a background model; otherwise ``ood_notes`` says why one is
        missing). With ``fpr`` (a false-positive rate in (0, 1)) also ``ood_flagged``: the
        shares of OOD and of evaluated inputs whose default score's p-value is at most
        ``fpr`` (``ood_score`` with ``as_="p_value"``)."""
        if isinstance(scores, str) or not scores:
            raise ConfigError(
                f"scores must be a non-empty list of OOD score names ({', '.join(OOD_SCORES)}); "
                f"got {scores!r}"
            )
        names = tuple(dict.fromkeys(check_score(score) for score in scores))
        if fpr is not None:
            fpr = check_fpr(fpr)
        dataset = x if isinstance(x, Dataset) else from_arrays(x, y)
        keep = dataset.y >= 0
        if not np.any(keep):
            raise DataError("evaluate needs labeled examples (labels >= 0)")
        ood_x = self._inputs(ood) if ood is not None else None
        model, state = self._fitted()
        result = infer(model, state.head_state, self._inputs(dataset.x[keep]))
        calibration = self._calibration()
        raw_probabilities = result.probabilities
        if calibration is not None:
            result = dataclasses.replace(result, probabilities=calibration.apply(raw_probabilities))
        labels = dataset.y[keep]
        if labels.max() >= len(self.label_names):
            raise DataError(
                f"labels go up to {labels.max()}, but the model knows {len(self.label_names)} classes"
            )
        metrics: dict[str, Any] = {
            "accuracy": accuracy(result.probabilities, labels),
            "ece": expected_calibration_error(result.probabilities, labels),
            "reconstruction_error": float(np.mean(result.reconstruction_error)),
            "num_examples": len(labels),
            "confusion": confusion_matrix(result.predictions, labels, len(self.label_names)).tolist(),
            "reliability": reliability_table(result.probabilities, labels),
            "channels": channel_diagnostics(result.responsibilities, self.tau),
            "label_names": list(self.label_names),
            "calibration": {
                **(calibration.to_dict() if calibration is not None else {"method": "none", "temperature": 1.0}),
                "ece_uncalibrated": expected_calibration_error(raw_probabilities, labels),
            },
        }
        if result.responsibilities.shape[-1]:
            metrics["clustering"] = clustering_metrics(result.responsibilities, labels)
        confusion = np.asarray(metrics["confusion"])
        totals = confusion.sum(axis=1)
        metrics["per_class_accuracy"] = {
            name: (float(confusion[c, c] / totals[c]) if totals[c] else None)
            for c, name in enumerate(self.label_names)
        }
        if result.responsibilities.shape[-1]:
            rows = self._channel_rows(np.mean(result.responsibilities, axis=0))
            metrics["channels"]["table"] = rows
            metrics["channels"]["free_channels"] = [r["channel"] for r in rows if r["free"]]
        if ood_x is not None:
            metrics.update(self._ood_metrics(self._inputs(dataset.x[keep]), ood_x, names, fpr))
        return metrics

    def _ood_metrics(
        self, x_in: np.ndarray, x_out: np.ndarray, names: tuple[str, ...], fpr: float | None
    ) -> dict[str, Any]:
        """``ood_auroc``, ``ood`` (AUROC, FPR95, AUPR per score), ``ood_notes`` (the scores
        that could not be computed, and why) and, with ``fpr``, ``ood_flagged``."""
        model, state = self._fitted()
        notes: dict[str, str] = {}
        if self.background is None:
            for name in NEEDS_BACKGROUND & set(names):
                notes[name] = str(no_background())
        reference = None
        blends = tuple(name for name in names if name.startswith("blend") and name not in notes)
        if blends or fpr is not None:
            try:
                reference = self.ood_reference(blends + ((DEFAULT_SCORE,) if fpr is not None else ()), own=fpr is not None)
            except SSVAEError as error:
                for name in blends:
                    notes[name] = str(error)
        available = tuple(name for name in names if name not in notes)
        flag_by = (DEFAULT_SCORE,) if fpr is not None and DEFAULT_SCORE not in notes else ()
        wanted = tuple(dict.fromkeys(("certainty", *available, *flag_by)))
        background = self._background()
        inside = ood_scores(score_inputs(model, state.head_state, x_in, wanted, background=background), reference, wanted)
        outside = ood_scores(score_inputs(model, state.head_state, x_out, wanted, background=background), reference, wanted)
        table = ood_table(inside, outside)
        metrics: dict[str, Any] = {
            "ood_auroc": table["certainty"]["auroc"],
            "ood": {name: table[name] for name in available},
        }
        if notes:
            metrics["ood_notes"] = notes
        if fpr is not None:
            score = DEFAULT_SCORE
            if reference is None or not flag_by:
                raise SSVAEError(
                    f"flagging at a false-positive rate reads the {score} score's p-values, which "
                    f"need the training data's scores: {notes.get(score, 'they are missing')}"
                )
            metrics["ood_flagged"] = {
                "score": score,
                "fpr": fpr,
                "flagged_ood": float(np.mean(p_values(outside[score], reference, score) <= fpr)),
                "flagged_in": float(np.mean(p_values(inside[score], reference, score) <= fpr)),
            }
        return metrics

    def save(self, path: str | os.PathLike[str], *, extra: dict[str, Any] | None = None) -> None:
        """Write a checkpoint (atomically) that ``load`` restores.

        The OOD scores' reference (``ood_reference``) goes with it, computed first
        when the classifier holds its training data, and so does ``channel_splits``
        (what the last retrain split). A background model (``fit_background``) is
        written next to it, to ``background_path`` of ``path``.
        """
        model, state = self._fitted()
        where = repr(os.fspath(path))
        if os.path.isdir(path):
            raise CheckpointError(f"cannot save a checkpoint to {where}: it is a directory; give a file path")
        if self.background is not None:
            self.background.save(background_path(path), extra={"ood_background_of": int(state.step)})
            extra = {**(extra or {}), "ood_background": {
                "file": background_path(path).name, **(self.background.background_info or {}),
            }}
        if self.channel_splits is not None:
            extra = {**(extra or {}), "channel_splits": self.channel_splits}
        if self.training_data is not None or self._ood_reference is not None:
            try:
                extra = {**(extra or {}), "ood_reference": self.ood_reference().to_dict()}
            except SSVAEError:
                pass  # a loaded classifier whose reference is out of date: saved without
        calibration = self._calibration()
        if calibration is not None:
            extra = {**(extra or {}), "calibration": calibration.to_dict()}
        try:
            save_checkpoint(
                path,
                model=model,
                state=state,
                opt_state=self.opt_state,
                config=self.config,
                input_shape=self.input_shape,
                label_names=self.label_names,
                registry=self.registry,
                extra=extra,
            )
        except OSError as error:  # the folder cannot be made or written: nothing was written
            raise CheckpointError(
                f"cannot save a checkpoint to {where}: {error.strerror or error}"
            ) from None

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, registry: Registry | None = None
    ) -> SSVAEClassifier:
        """Restore a classifier saved by ``save`` (or by ``ssvae train``)."""
        checkpoint = load_checkpoint(path, registry)
        classifier = cls(checkpoint.config, registry=registry)
        classifier.model = checkpoint.model
        classifier.state = checkpoint.state
        classifier.opt_state = checkpoint.opt_state
        classifier.input_shape = tuple(checkpoint.manifest["input_shape"])
        classifier.label_names = checkpoint.label_names
        if "ood_reference" in checkpoint.manifest:
            classifier._ood_reference = OODReference.from_dict(checkpoint.manifest["ood_reference"])
        classifier.channel_splits = checkpoint.manifest.get("channel_splits")
        background = checkpoint.manifest.get("ood_background")
        if isinstance(background, dict) and background_path(path).is_file():
            classifier.background = cls.load(background_path(path), registry=registry)
            classifier.background.background_info = {
                k: float(v) for k, v in background.items() if k in ("noise", "train_time_s")
            }
        if "calibration" in checkpoint.manifest:
            classifier.calibration = Calibration.from_dict(checkpoint.manifest["calibration"])
        return classifier

    def channels(self, x: ArrayLike | Dataset | None = None) -> list[dict[str, Any]]:
        """One row per channel: usage ``p̂_c`` on ``x`` (default: the training data), owner
        label, τ row maximum, label-mass share, and whether the channel is free."""
        self._fitted()
        data = self.training_data if x is None else x
        if data is None:
            raise SSVAEError("pass the inputs whose channel usage to measure")
        usage = np.mean(self.infer(data).responsibilities, axis=0)
        return self._channel_rows(usage)

    def _channel_rows(self, usage: np.ndarray) -> list[dict[str, Any]]:
        model, state = self._fitted()
        if usage.size == 0:
            return []
        mass = model.head.label_mass(state.head_state)
        free = model.head.free_channels(state.head_state, jax.numpy.asarray(usage))
        return channel_table(
            usage,
            self.tau,
            None if mass is None else np.asarray(mass),
            None if free is None else np.asarray(free),
            self.label_names,
        )


def _carry_opt_state(old: Any, fresh: Any) -> Any:
    """The optimiser state ``old`` in the tree structure of ``fresh`` (a model whose head
    grew its label space keeps every moment estimate; only static metadata changed)."""
    old_leaves = jax.tree.leaves(old)
    fresh_leaves, structure = jax.tree.flatten(fresh)
    same = len(old_leaves) == len(fresh_leaves) and all(
        np.shape(a) == np.shape(b) for a, b in zip(old_leaves, fresh_leaves, strict=True)
    )
    if not same:
        raise DataError(
            "the head's parameters change shape when classes are added; only heads without "
            "parameters (the τ head) can add classes after training"
        )
    return jax.tree.unflatten(structure, old_leaves)
