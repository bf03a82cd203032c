"""The studio's hold on one run directory: its data, model, label store and retrain job.

A ``StudioSession`` locks the run for as long as it is open (the studio is then the
run's one writer; ``ssvae label`` or ``ssvae retrain`` on the same run are refused until it
closes). Everything the page shows is computed here, from the run's checkpoint and label
store; labels are saved to ``labels.json`` (atomically, source ``studio``) before a call
returns, so a server killed at any moment keeps every label it acknowledged.

Methods raise ``StudioError`` with an HTTP status for bad input; the web layer
(``ssvae_core.studio.server``) turns it into a 4xx reply, and nothing changes.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ssvae_core.api import SSVAEClassifier
from ssvae_core.errors import ConfigError, DataError, SSVAEError
from ssvae_core.labels.active import (
    build_acquisition,
    model_context,
    query,
    query_inputs,
    query_key,
    registered_strategy,
)
from ssvae_core.labels.annotators import agreement
from ssvae_core.labels.label_io import export_text
from ssvae_core.labels.label_issues import DEFAULT_ISSUES, classifier_issues
from ssvae_core.labels.store import STORE_NAME, LabelStore, label_name
from ssvae_core.modelling.inference import Inference, infer
from ssvae_core.registry import Registry, default_registry
from ssvae_core.runs.explore import (
    PROJECTIONS,
    channel_members,
    png_bytes,
    project,
    reconstruct_through,
    tile,
)
from ssvae_core.runs.ood import DEFAULT_SCORE, ood_scores, score_inputs
from ssvae_core.runs.retraining import retrain_run
from ssvae_core.runs.run import Run

SOURCE = "studio"
DEFAULT_STRATEGY = "margin"
LABEL_FREE_STRATEGY = "typical"
DEFAULT_PROJECTION = "classes"
MAX_QUERY = 200
DEFAULT_QUEUE = 20  # the page's default query size
MAX_LABELS_PER_REQUEST = 10_000
MAX_RETRAIN_STEPS = 1_000_000
IMAGE_SCALE = 8
NEIGHBOURS_SHOWN = 3


class StudioError(SSVAEError):
    """Bad input to the studio: ``status`` is the HTTP status the reply gets."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class RetrainCancelled(Exception):
    """Raised from the retrain's metric sink to stop it at the end of a chunk."""


@dataclass
class RetrainJob:
    """The state of the studio's background retrain (one at a time)."""

    state: str = "idle"  # idle, running, done, failed, cancelled
    step: int = 0
    total: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    message: str | None = None
    accuracy: float | None = None
    prediction_change: float | None = None
    version: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def to_json(self) -> dict[str, Any]:
        """The job's state as the page reads it."""
        return {
            "state": self.state,
            "step": self.step,
            "total": self.total,
            "history": list(self.history),
            "message": self.message,
            "accuracy": self.accuracy,
            "prediction_change": self.prediction_change,
            "version": self.version,
        }


@dataclass(frozen=True)
class _View:
    """What the current model makes of the training examples (replaced after a retrain)."""

    classifier: SSVAEClassifier
    version: int
    step: int
    probabilities: np.ndarray
    certainty: np.ndarray
    responsibilities: np.ndarray
    z_mean: np.ndarray
    ood: np.ndarray
    members: list[np.ndarray]


def _percentile(values: np.ndarray) -> np.ndarray:
    """Each value's rank among ``values`` in [0, 1] (ties share the lower rank)."""
    if values.size < 2:
        return np.zeros_like(values, dtype=np.float64)
    order = np.sort(values)
    return np.searchsorted(order, values, side="left") / (values.size - 1)


def studio_ood(classifier: SSVAEClassifier, result: Inference, x: np.ndarray) -> np.ndarray:
    """The OOD colouring's score: the default OOD score (``DEFAULT_SCORE``)
    where the checkpoint keeps the training data's scores (and, for a ratio score, a
    background model), else the likelihood score."""
    try:
        reference = classifier.ood_reference((DEFAULT_SCORE,))
    except SSVAEError:
        return result.likelihood_score
    model, state = classifier.model, classifier.state
    assert model is not None and state is not None
    inputs = score_inputs(
        model, state.head_state, x, (DEFAULT_SCORE,), background=classifier._background(), result=result
    )
    return ood_scores(inputs, reference, (DEFAULT_SCORE,))[DEFAULT_SCORE]


def shortcut_keys(names: list[str]) -> dict[str, str]:
    """A keyboard key per label name: its first character that is a letter or digit and
    not taken yet (lowercase), else the first free digit; names left over get none."""
    taken: set[str] = set()
    keys: dict[str, str] = {}
    for name in names:
        for char in name.lower():
            if char.isascii() and char.isalnum() and char not in taken:
                keys[name] = char
                taken.add(char)
                break
    for name in names:
        if name not in keys:
            free = next((d for d in "1234567890" if d not in taken), None)
            if free is not None:
                keys[name] = free
                taken.add(free)
    return keys


class StudioSession:
    """An open run: serves what the studio page asks for, and writes its labels."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        data: str | None = None,
        test_data: str | None = None,
        registry: Registry | None = None,
    ):
        self.run = run = Run.open(run_dir, "studio", data=data, test_data=test_data)
        self.out = run.path
        self.registry = registry or default_registry()
        self._lock = run.lock().acquire()
        try:
            self.checkpoint = run.require_checkpoint("before opening it in the studio")
            run.recover(int(run.manifest()["step"]))  # before any label is written
            run.rounds()  # a damaged run file is refused here, in one line
            run.report()
            self.config = run.config
            self.data, self.test_data = data, test_data
            self.dataset = run.dataset
            self.split = run.split
            self.train_rows = np.asarray(self.split.train, dtype=np.int64)
            self._position = {int(row): i for i, row in enumerate(self.train_rows)}
            self._store = run.label_store()
            self._labels_lock = threading.Lock()
            self._cache_lock = threading.Lock()
            self._cache: dict[Any, Any] = {}
            self._job = RetrainJob()
            self._job_lock = threading.Lock()
            self._view = self._load_view(version=0)
            self._warm(self._view)
        except BaseException:
            self._lock.release()
            raise

    # ---- the model's view of the data -------------------------------------------------

    def _load_view(self, version: int) -> _View:
        classifier = SSVAEClassifier.load(self.checkpoint, registry=self.registry)
        assert classifier.model is not None and classifier.state is not None
        x = self.dataset.x[self.train_rows]
        result = infer(
            classifier.model, classifier.state.head_state, x, likelihood=True,
            calibration=classifier.calibration,
        )
        ood = studio_ood(classifier, result, x)
        responsibilities = result.responsibilities
        return _View(
            classifier=classifier,
            version=version,
            step=int(classifier.state.step),
            probabilities=result.probabilities,
            certainty=result.certainty,
            responsibilities=responsibilities,
            z_mean=result.z_mean,
            ood=_percentile(np.asarray(ood, dtype=np.float64)),
            members=channel_members(responsibilities),
        )

    def _warm(self, view: _View) -> None:
        """What the page asks for first, computed before it asks: the default map and what
        the default query strategy reads about every training example."""
        self._map_points(view, DEFAULT_PROJECTION)
        strategy = DEFAULT_STRATEGY if self._store.current() else LABEL_FREE_STRATEGY
        with contextlib.suppress(StudioError):  # the queue reports it when asked
            self.queue(strategy, n=DEFAULT_QUEUE, view=view)  # compiles its selection too

    def _query_inputs(self, view: _View, strategy: str) -> Any:
        """What ``strategy`` reads about the training examples under ``view``'s model: once
        per model version and number of posterior samples, since a label given between two
        queries changes only which examples are labeled."""
        model, state = view.classifier.model, view.classifier.state
        assert model is not None and state is not None
        acquisition = build_acquisition(
            strategy, model_context(model, view.classifier.input_shape), None, registry=self.registry,
        )
        samples = int(acquisition.num_samples)
        return self._cached(
            ("inputs", view.version, samples),
            lambda: query_inputs(
                model, state.head_state, self.dataset.x[self.train_rows],
                np.zeros(len(self.train_rows), dtype=bool), num_samples=samples,
                key=query_key(self.config.seed, view.step), calibration=view.classifier.calibration,
            ),
        )

    @property
    def version(self) -> int:
        """The version of the model shown: one more after each finished retrain."""
        return self._view.version

    def _model_labels(self) -> list[str]:
        return list(self._view.classifier.label_names)

    def label_names(self) -> list[str]:
        """The model's classes, then names in the label store it has not trained on yet."""
        return list(dict.fromkeys([*self._model_labels(), *self._store.label_names()]))

    def _row(self, index: object) -> int:
        """The position among the training rows of dataset row ``index`` (404 otherwise)."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise StudioError(400, f"an example index must be an integer; got {index!r}")
        if index not in self._position:
            raise StudioError(
                404,
                f"example {index} is not a training example of this run (indices are rows of "
                f"the run's dataset, 0..{len(self.dataset.x) - 1}; held-out test rows are not shown)",
            )
        return self._position[index]

    def _report(self) -> dict[str, Any]:
        try:
            return self.run.report() or {}
        except SSVAEError:  # damaged while the studio is open: shown without its report
            return {}

    def state(self) -> dict[str, Any]:
        """What the page shows first: the run, its model, labels and retrain."""
        report = self._report()
        names = self.label_names()
        current = self._store.current()
        return {
            "run": self.out.name,
            "step": self._view.step,
            "version": self._view.version,
            "label_names": names,
            "model_labels": self._model_labels(),
            "shortcuts": shortcut_keys(names),
            "strategies": sorted(self.registry.names("acquisition")),
            # a run without labels has no predictions to be unsure of: choose typical examples
            "default_strategy": DEFAULT_STRATEGY if current else LABEL_FREE_STRATEGY,
            "projections": list(PROJECTIONS),  # the first is the default
            "num_train": len(self.train_rows),
            "num_labeled": sum(1 for index in current if index in self._position),
            "accuracy": report.get("test_accuracy"),
            "ece": report.get("ece"),
            "has_channels": self._view.responsibilities.shape[1] > 0,
            "image_shape": list(self.dataset.sample_shape),
            "retrain": self.retrain_status(),
        }

    def latent_map(self, projection: str = DEFAULT_PROJECTION) -> dict[str, Any]:
        """The training examples laid out by ``projection`` of the latent space."""
        if projection not in PROJECTIONS:
            raise StudioError(400, f"unknown projection {projection!r:.40}; allowed: {', '.join(PROJECTIONS)}")
        view = self._view
        points = self._map_points(view, projection)
        names = list(view.classifier.label_names)
        current = self._store.current()
        predicted = np.argmax(view.probabilities, axis=1)
        has_channels = view.responsibilities.shape[1] > 0
        channels = np.argmax(view.responsibilities, axis=1) if has_channels else None
        return {
            "projection": projection,
            "version": view.version,
            "index": self.train_rows.tolist(),
            "x": np.round(points[:, 0], 5).tolist(),
            "y": np.round(points[:, 1], 5).tolist(),
            "predicted": [names[int(p)] for p in predicted],
            "channel": channels.tolist() if channels is not None else [None] * len(self.train_rows),
            "certainty": np.round(view.certainty, 5).tolist(),
            "ood": np.round(view.ood, 5).tolist(),
            "label": [current.get(int(row)) for row in self.train_rows],
        }

    def _map_points(self, view: _View, projection: str) -> np.ndarray:
        return self._cached(
            ("map", view.version, projection),
            lambda: project(
                view.z_mean, projection, responsibilities=view.responsibilities,
                probabilities=view.probabilities,
            ),
        )

    def _cached(self, key: Any, compute: Any) -> Any:
        with self._cache_lock:
            if key in self._cache:
                return self._cache[key]
        value = compute()
        with self._cache_lock:
            return self._cache.setdefault(key, value)

    def example(self, index: object) -> dict[str, Any]:
        """One training example: its label, the model's prediction, certainty and channel."""
        row = self._row(index)
        view = self._view
        names = list(view.classifier.label_names)
        probabilities = view.probabilities[row]
        has_channels = view.responsibilities.shape[1] > 0
        return {
            "index": index,
            "predicted": names[int(np.argmax(probabilities))],
            "certainty": float(view.certainty[row]),
            "channel": int(np.argmax(view.responsibilities[row])) if has_channels else None,
            "label": self._store.current().get(int(index)),  # type: ignore[call-overload]
            "probabilities": {name: float(p) for name, p in zip(names, probabilities, strict=True)},
        }

    def example_png(self, index: object) -> bytes:
        """The image of one example, as PNG."""
        self._row(index)
        return self._cached(
            ("image", index),
            lambda: png_bytes(tile([[self.dataset.x[int(index)]]], scale=IMAGE_SCALE, gap=0)),  # type: ignore[call-overload]
        )

    def channels(self) -> dict[str, Any]:
        """The model's channels: usage, owner, free or not, claims by new classes."""
        view = self._view
        if view.responsibilities.shape[1] == 0:
            return {"channels": [], "label_names": self._model_labels(), "version": view.version}
        usage = view.responsibilities.mean(axis=0)
        rows = view.classifier._channel_rows(usage)
        tau = view.classifier.tau
        claims = self._claims()
        out = []
        for c, row in enumerate(rows):
            claimant = claims.get(c)
            out.append({
                "channel": c,
                "usage": float(usage[c]),
                # a claimed channel belongs to its class, as rounds.jsonl says, even before
                # its τ row has moved there
                "owner": claimant if claimant is not None else row.get("owner"),
                "claimed": claimant is not None,
                "tau": [] if tau is None else np.round(tau[c], 5).tolist(),
                "free": claimant is None and bool(row.get("free", False)),
                "members": self.train_rows[view.members[c]].tolist(),
            })
        return {"channels": out, "label_names": self._model_labels(), "version": view.version}

    def _claims(self) -> dict[int, str]:
        """The channel each class claimed in the run's rounds (a later claim wins), among
        the model's classes."""
        names = set(self._model_labels())
        claims: dict[int, str] = {}
        with contextlib.suppress(SSVAEError):  # damaged while the studio is open: no claims shown
            for record in self.run.rounds():
                for name, channels in (record.get("claimed_channels") or {}).items():
                    if name in names:
                        claims.update((int(c), name) for c in channels)
        return claims

    def channel_png(self, channel: object) -> bytes:
        """The most typical members of one channel and their reconstructions, as PNG."""
        view = self._view
        count = view.responsibilities.shape[1]
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < count:
            allowed = f"0..{count - 1}" if count else "none: this model has no channels"
            raise StudioError(404, f"unknown channel {channel!r}; channels: {allowed}")

        def draw() -> bytes:
            members = view.members[channel]
            x = self.dataset.x[self.train_rows[members]]
            model = view.classifier.model
            reconstructions = reconstruct_through(model, view.z_mean[members], channel)
            return png_bytes(tile([list(x), list(reconstructions)], scale=IMAGE_SCALE // 2))

        return self._cached(("channel", view.version, channel), draw)

    # ---- queries and labels -----------------------------------------------------------

    def queue(
        self, strategy: str = DEFAULT_STRATEGY, n: object = 10, *, view: _View | None = None
    ) -> dict[str, Any]:
        """The unlabeled examples ``strategy`` would have labeled next."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_QUERY:
            raise StudioError(400, f"n must be an integer from 1 to {MAX_QUERY}; got {n!r}")
        try:
            registered_strategy(strategy, self.registry)
        except ConfigError as error:
            raise StudioError(400, str(error)) from None
        view = self._view if view is None else view
        labeled_rows = np.fromiter(self._store.current(), dtype=np.int64)
        labeled = np.isin(self.train_rows, labeled_rows)
        n = min(n, int(np.sum(~labeled)))
        if n == 0:
            return {"strategy": strategy, "version": view.version, "items": []}
        model, state = view.classifier.model, view.classifier.state
        assert model is not None and state is not None
        try:
            result = query(
                model, state.head_state, self.dataset.x[self.train_rows], labeled, n,
                strategy=strategy, input_shape=view.classifier.input_shape,
                key=query_key(self.config.seed, view.step), registry=self.registry,
                calibration=view.classifier.calibration, ood=view.classifier.ood_score,
                inputs=self._query_inputs(view, strategy),
            )
        except (ConfigError, DataError) as error:
            raise StudioError(400, str(error)) from None
        names = list(view.classifier.label_names)
        items = [
            {
                "index": int(self.train_rows[i]),
                "score": float(score) if math.isfinite(float(score)) else None,
                "predicted": names[int(p)],
                "certainty": float(c),
                **self._reasons(view, int(i), labeled),
            }
            for i, score, p, c in zip(
                result.indices, result.scores, result.predictions, result.certainty, strict=True
            )
        ]
        return {"strategy": strategy, "version": view.version, "items": items}

    def _reasons(self, view: _View, row: int, labeled: np.ndarray) -> dict[str, Any]:
        """Why an example is queued: its two most probable classes, its channel and its
        nearest labeled neighbours in the latent space (with their labels)."""
        names = list(view.classifier.label_names)
        order = np.argsort(-view.probabilities[row])[:2]
        near: list[dict[str, Any]] = []
        if np.any(labeled):
            rows = np.flatnonzero(labeled)
            distance = np.linalg.norm(view.z_mean[rows] - view.z_mean[row], axis=1)
            current = self._store.current()
            for k in rows[np.argsort(distance, kind="stable")[:NEIGHBOURS_SHOWN]]:
                index = int(self.train_rows[k])
                near.append({"index": index, "label": current.get(index)})
        has_channels = view.responsibilities.shape[1] > 0
        return {
            "top": [[names[int(y)], round(float(view.probabilities[row, y]), 5)] for y in order],
            "channel": int(np.argmax(view.responsibilities[row])) if has_channels else None,
            "neighbours": near,
        }

    def add_labels(self, body: object) -> dict[str, Any]:
        """Label examples: ``{"labels": [{"index": i, "label": name}, ...], "new_class": bool,
        "relabel": bool}``. The labels of one request are one action for ``undo``;
        ``relabel`` gives examples a label other than the one they hold (a correction)."""
        if not isinstance(body, Mapping):
            raise StudioError(400, 'the body must be a JSON object {"labels": [{"index": ..., "label": ...}]}')
        fields = {"labels", "new_class", "relabel", "confirm", "annotator"}
        unknown = sorted(set(body) - fields)
        if unknown:
            raise StudioError(
                400, f"unknown field {unknown[0]!r:.40}; allowed: {', '.join(map(repr, sorted(fields)))}"
            )
        annotator = body.get("annotator")
        if annotator is not None and not isinstance(annotator, str):
            raise StudioError(400, f"'annotator' must be a name (a string) or null; got {annotator!r:.40}")
        items = body.get("labels")
        new_class, relabel = body.get("new_class", False), body.get("relabel", False)
        confirm = body.get("confirm", False)
        for name, flag in (("new_class", new_class), ("relabel", relabel), ("confirm", confirm)):
            if not isinstance(flag, bool):
                raise StudioError(400, f"'{name}' must be true or false; got {flag!r:.40}")
        if not isinstance(items, list) or not items:
            raise StudioError(400, "'labels' must be a non-empty list of {\"index\": ..., \"label\": ...}")
        if len(items) > MAX_LABELS_PER_REQUEST:
            raise StudioError(400, f"at most {MAX_LABELS_PER_REQUEST} labels per request; got {len(items)}")
        indices, names = [], []
        for number, item in enumerate(items):
            if not isinstance(item, Mapping) or set(item) != {"index", "label"}:
                raise StudioError(
                    400, f"labels[{number}] must be an object with exactly 'index' and 'label'; got {item!r:.80}"
                )
            self._row(item["index"])
            if not isinstance(item["label"], str):
                raise StudioError(400, f"labels[{number}].label must be a string; got {item['label']!r:.40}")
            try:
                names.append(label_name(item["label"]))
            except DataError as error:
                raise StudioError(400, f"labels[{number}]: {error}") from None
            indices.append(item["index"])
        with self._labels_lock:
            known = self.label_names()
            fresh = sorted({name for name in names if name not in known})
            if fresh and not new_class:
                raise StudioError(
                    400,
                    f"unknown label {fresh[0]!r}; known labels: {', '.join(map(repr, known))} "
                    '(to create a new class, send "new_class": true)',
                )
            store = self._store
            try:
                updated = store.add(
                    indices, names, x=self.dataset.x, source=SOURCE, allowed=self.train_rows,
                    known=self._model_labels(), relabel=relabel, confirm=confirm,
                    annotator=annotator or None,
                    batch=secrets.token_hex(6) if len(indices) > 1 else None,
                )
            except DataError as error:
                status = 409 if "already labeled" in str(error) or "two different labels" in str(error) else 400
                raise StudioError(status, str(error)) from None
            if len(updated) != len(store):
                updated.save(self.run.store_path)
                self._store = updated
            current = updated.current()
            return {
                "added": len(updated) - len(store),
                "counts": updated.counts(),
                "num_labeled": sum(1 for index in current if index in self._position),
                "label_names": self.label_names(),
                "new_classes": [name for name in updated.label_names() if name not in self._model_labels()],
            }

    def issues(self, n: object = DEFAULT_ISSUES) -> dict[str, Any]:
        """The labeled examples the model most disputes (``ssvae_core.labels.label_issues``)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_QUERY:
            raise StudioError(400, f"n must be an integer from 1 to {MAX_QUERY}; got {n!r}")
        view = self._view
        found = classifier_issues(view.classifier, self.dataset.x, self._store, n=n)
        return {"version": view.version, "items": [issue.to_json() for issue in found]}

    def export(self, suffix: str) -> str:
        """The store's current labels as a ``.csv`` or Label Studio ``.json`` download."""
        return export_text(self._store, suffix)

    def undo(self, body: object) -> dict[str, Any]:
        """Take labels back, from the store (so an undo outlives the page): ``{}`` takes back
        the latest studio action (one label, or every label of one batch); ``{"index": i,
        "label": name}`` withdraws that example's studio label. An example relabeled in the
        studio holds its earlier label again."""
        if not isinstance(body, Mapping) or (body and set(body) != {"index", "label"}):
            raise StudioError(
                400, 'the body must be a JSON object: {} (the latest action) or {"index": ..., "label": ...}'
            )
        with self._labels_lock:
            try:
                if body:
                    index, label = body["index"], body["label"]
                    self._row(index)
                    if not isinstance(label, str):
                        raise StudioError(400, f"'label' must be a string; got {label!r:.40}")
                    updated, entry = self._store.withdraw(index, label, source=SOURCE)
                    removed = [entry]
                else:
                    updated, removed = self._store.withdraw_last(source=SOURCE)
            except DataError as error:
                status = 404 if "no label" in str(error) else 409
                raise StudioError(status, str(error)) from None
            updated.save(self.run.store_path)
            self._store = updated
            current = updated.current()
            return {
                "removed": [entry.to_json() for entry in removed],
                "restored": {str(e.index): current.get(e.index) for e in removed},
                "num_labeled": sum(1 for index in current if index in self._position),
            }

    def history(self) -> dict[str, Any]:
        """Every label given, newest first, the rounds so far and the annotators' agreement."""
        latest = {entry.index: k for k, entry in enumerate(self._store.entries)}
        entries = [
            {**entry.to_json(), "current": latest[entry.index] == k}
            for k, entry in reversed(list(enumerate(self._store.entries)))
        ]
        rounds = []
        keep = ("round", "command", "labels", "test_accuracy", "ece", "to_step", "claimed_channels", "time")
        with contextlib.suppress(SSVAEError):  # damaged while the studio is open: no rounds shown
            rounds = [{key: record.get(key) for key in keep} for record in self.run.rounds()]
        return {"entries": entries, "rounds": rounds, "agreement": agreement(self._store)}

    # ---- retraining -------------------------------------------------------------------

    def retrain_status(self) -> dict[str, Any]:
        """The state of the background retrain."""
        with self._job_lock:
            return self._job.to_json()

    def start_retrain(self, body: object) -> dict[str, Any]:
        """Start warm retraining in the background: ``{"steps": N}``."""
        if not isinstance(body, Mapping) or set(body) - {"steps"}:
            raise StudioError(400, 'the body must be a JSON object {"steps": N}')
        steps = body.get("steps", 300)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_RETRAIN_STEPS:
            raise StudioError(400, f"steps must be an integer from 1 to {MAX_RETRAIN_STEPS}; got {steps!r}")
        with self._job_lock:
            if self._job.state == "running":
                raise StudioError(409, "a retrain is running already; wait for it or cancel it")
            self._job = RetrainJob(state="running", total=steps, version=self._view.version)
            job = self._job
            with self._labels_lock:  # the labels of this retrain: those given before it started
                store = self._store
            job.thread = threading.Thread(
                target=self._retrain, args=(job, steps, store), name="ssvae-retrain", daemon=True
            )
            job.thread.start()
            return job.to_json()

    def cancel_retrain(self) -> dict[str, Any]:
        """Stop the running retrain at the end of its current chunk."""
        with self._job_lock:
            if self._job.state != "running":
                raise StudioError(409, "no retrain is running")
            self._job.cancel.set()
            return self._job.to_json()

    def _retrain(self, job: RetrainJob, steps: int, store: LabelStore) -> None:
        start_step = self._view.step

        def sink(step: int, metrics: dict[str, float]) -> None:
            with self._job_lock:
                job.step = step - start_step
                job.history.append({"step": job.step, **{k: round(v, 6) for k, v in metrics.items()}})
            if job.cancel.is_set():
                raise RetrainCancelled

        state, message, accuracy, change = "done", None, None, None
        try:
            if job.cancel.is_set():
                raise RetrainCancelled
            report = retrain_run(
                self.out, steps, registry=self.registry, sinks=[sink], data=self.data, test_data=self.test_data,
                held_lock=self._lock, intermediate_checkpoints=False, store=store,
            )
            accuracy = report.get("test_accuracy")
            view = self._load_view(version=self._view.version + 1)
            self._warm(view)  # ready when the page asks for it
            # the stopping signal: how much of the unlabeled pool this retrain changed
            unlabeled = ~np.isin(self.train_rows, np.fromiter(self._store.current(), dtype=np.int64))
            if np.any(unlabeled):
                old_names = np.asarray(self._view.classifier.label_names, dtype=object)
                new_names = np.asarray(view.classifier.label_names, dtype=object)
                before = old_names[np.argmax(self._view.probabilities[unlabeled], axis=1)]
                after = new_names[np.argmax(view.probabilities[unlabeled], axis=1)]
                change = round(float(np.mean(before != after)), 5)
            self._view = view
            with self._cache_lock:
                self._cache = {
                    k: v for k, v in self._cache.items() if k[0] == "image" or k[1] == view.version
                }
        except RetrainCancelled:
            self._recover()
            state, message = "cancelled", "cancelled; the model is as it was before this retrain"
        except SSVAEError as error:
            self._recover()
            state, message = "failed", str(error)
        except Exception as error:  # a bug or a numerical failure: shown, never swallowed
            self._recover()
            state, message = "failed", f"{type(error).__name__}: {error}"
        with self._job_lock:
            job.state, job.message, job.accuracy, job.prediction_change = state, message, accuracy, change
            job.version = self._view.version

    def _recover(self) -> None:
        """After a retrain that did not finish: metrics back to the checkpoint's step."""
        # labels may be being written meanwhile: their temporary files are not leftovers
        self.run.recover(int(self.run.manifest()["step"]), spare=(STORE_NAME,))

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the running retrain, if any, to end; returns its state."""
        thread = self._job.thread
        if thread is not None:
            thread.join(timeout)
        return self.retrain_status()

    def close(self) -> None:
        """Stop a running retrain and release the run."""
        if self._job.state == "running":
            self._job.cancel.set()
            self.wait()
        self._lock.release()

    def __enter__(self) -> StudioSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

