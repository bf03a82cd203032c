"""The Python API: build from a config, fit on arrays, predict, score, encode, save and load."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from numpy.typing import ArrayLike

from ssvae_core.checkpoint import load_checkpoint, save_checkpoint
from ssvae_core.config import Config, default_config
from ssvae_core.data import Dataset, from_arrays
from ssvae_core.errors import ConfigError, DataError, SSVAEError
from ssvae_core.inference import Inference, infer
from ssvae_core.metrics import (
    accuracy,
    auroc,
    channel_diagnostics,
    confusion_matrix,
    expected_calibration_error,
    reliability_table,
)
from ssvae_core.model import SSVAE, build_model
from ssvae_core.objective import Objective, build_objective
from ssvae_core.registry import Registry, default_registry
from ssvae_core.training import MetricSink, Trainer, TrainState, init_state, training_arrays

CheckpointCallback = Callable[["SSVAEClassifier"], None]


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
        self.config = config or default_config(self.registry)
        self.model: SSVAE | None = None
        self.state: TrainState | None = None
        self.opt_state: Any = None
        self.input_shape: tuple[int, ...] = ()
        self.label_names: tuple[str, ...] = ()
        self.history: list[dict[str, float]] = []

    def fit(
        self,
        x: ArrayLike | Dataset,
        y: ArrayLike | None = None,
        *,
        num_classes: int | None = None,
        label_names: Sequence[str] | None = None,
        sinks: Sequence[MetricSink] = (),
        on_checkpoint: CheckpointCallback | None = None,
    ) -> SSVAEClassifier:
        """Train from scratch on every row of ``x``; rows whose label is ``-1`` are unlabeled.

        Each sink — ``sink(step, metrics)`` — receives the mean metrics of each chunk of
        ``train.log_every`` steps (:attr:`history` keeps them too).
        ``on_checkpoint(classifier)`` is called every ``train.checkpoint_every`` steps (at
        the end of the chunk that reaches them) with the classifier holding the training
        state reached, e.g. ``lambda c: c.save("model.ckpt")``.
        """
        dataset = self._training_data(x, y, num_classes, label_names)
        model_key, state_key = jax.random.split(jax.random.PRNGKey(self.config.seed))
        model, self.config = build_model(
            self.config,
            input_shape=dataset.sample_shape,
            num_classes=dataset.num_classes,
            key=model_key,
            data=dataset.x,
            registry=self.registry,
        )
        self.model = model
        self.state = init_state(model, state_key)
        self.input_shape = dataset.sample_shape
        self.label_names = dataset.label_names
        self.opt_state = self._trainer().init_opt_state(model)
        self.history = []
        return self._train(dataset, self.config.train.steps, sinks, on_checkpoint)

    def resume(
        self,
        x: ArrayLike | Dataset,
        y: ArrayLike | None = None,
        *,
        until_step: int,
        sinks: Sequence[MetricSink] = (),
        on_checkpoint: CheckpointCallback | None = None,
    ) -> SSVAEClassifier:
        """Continue training a fitted or loaded classifier up to ``until_step``.

        Parameters, optimiser state, τ counts and the RNG key carry on, so training 10 steps,
        saving, loading and resuming to 20 on the same data gives the same model as 20
        steps in one go. ``y`` may hold labels the first run did not have: they join the
        labeled pool (the compiled step is reused; only values change). ``sinks`` and
        ``on_checkpoint`` work as in :meth:`fit`.
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
        return self._train(dataset, until_step, sinks, on_checkpoint)

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
        supervised = self.config.term_options("supervised").weight
        if not np.any(dataset.y >= 0) and supervised > 0:
            raise DataError("training needs at least one labeled example (a label >= 0 in y)")
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
        return build_objective(
            self.config,
            model,
            input_shape=self.input_shape,
            num_classes=len(self.label_names),
            registry=self.registry,
        )

    def _trainer(self) -> Trainer:
        model, _ = self._fitted()
        return Trainer.for_model(self.config, model, self._objective())

    def _train(
        self,
        dataset: Dataset,
        until_step: int,
        sinks: Sequence[MetricSink],
        on_checkpoint: CheckpointCallback | None = None,
    ) -> SSVAEClassifier:
        model, state = self._fitted()
        trainer = self._trainer()
        every = self.config.train.checkpoint_every

        def record(step: int, metrics: dict[str, float]) -> None:
            self.history.append({"step": step, **metrics})

        last = [int(state.step)]  # the step reached so far (the arrays are donated)

        def reached(model: SSVAE, state: TrainState, opt_state: Any) -> None:
            self.model, self.state, self.opt_state = model, state, opt_state
            step = int(state.step)
            if on_checkpoint is not None and every > 0 and step // every > last[0] // every:
                on_checkpoint(self)
            last[0] = step

        arrays = training_arrays(
            dataset.x,
            dataset.y,
            objective=trainer.spec.objective,
            num_classes=dataset.num_classes,
        )
        self.model, self.state, self.opt_state = trainer.train(
            arrays,
            model,
            state,
            self.opt_state,
            until_step=until_step,
            sinks=[record, *sinks],
            on_chunk=reached,
        )
        return self

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

    def infer(self, x: ArrayLike | Dataset) -> Inference:
        """Every per-example output at once (probabilities, certainty, latents, ...)."""
        model, state = self._fitted()
        return infer(model, state.head_state, self._inputs(x))

    def predict_proba(self, x: ArrayLike | Dataset) -> np.ndarray:
        """``p(y|x)``, shape ``(N, num_classes)``; rows sum to 1."""
        return self.infer(x).probabilities

    def predict(self, x: ArrayLike | Dataset) -> np.ndarray:
        """The most probable class of each example."""
        return self.infer(x).predictions

    def ood_score(self, x: ArrayLike | Dataset) -> np.ndarray:
        """``1 − max_c r_c(x) max_y τ_{c,y}`` (τ head) or ``1 − max_y p(y|x)``; in [0, 1]."""
        return self.infer(x).ood_score

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
    ) -> dict[str, Any]:
        """Accuracy, ECE, confusion, reliability, reconstruction error and channel diagnostics
        on labeled data; with ``ood`` also the AUROC of the OOD score against those inputs."""
        dataset = x if isinstance(x, Dataset) else from_arrays(x, y)
        keep = dataset.y >= 0
        if not np.any(keep):
            raise DataError("evaluate needs labeled examples (labels >= 0)")
        result = self.infer(dataset.x[keep])
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
        }
        if ood is not None:
            metrics["ood_auroc"] = auroc(result.ood_score, self.ood_score(ood))
        return metrics

    def save(self, path: str | os.PathLike[str], *, extra: dict[str, Any] | None = None) -> None:
        """Write a checkpoint (atomically) that :meth:`load` restores."""
        model, state = self._fitted()
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

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, registry: Registry | None = None
    ) -> SSVAEClassifier:
        """Restore a classifier saved by :meth:`save` (or by ``ssvae train``)."""
        checkpoint = load_checkpoint(path, registry)
        classifier = cls(checkpoint.config, registry=registry)
        classifier.model = checkpoint.model
        classifier.state = checkpoint.state
        classifier.opt_state = checkpoint.opt_state
        classifier.input_shape = tuple(checkpoint.manifest["input_shape"])
        classifier.label_names = checkpoint.label_names
        return classifier
