"""Training, by file: the pure step (``step``), batches and the data on the device or
the host (``batches``), and the loop with its metric sinks (``loop``)."""

from ssvae_core.training.batches import (
    DEVICE_BYTES,
    HostBatches,
    HostTrainingArrays,
    TrainingArrays,
    data_fits_device,
    labeled_pool,
    sample_batch,
    training_arrays,
)
from ssvae_core.training.loop import JsonLinesSink, MetricSink, Trainer, data_mesh, take_steps
from ssvae_core.training.step import (
    StepSpec,
    TrainState,
    apply_gradients,
    init_state,
    learning_rate,
    make_optimizer,
    step_gradients,
    train_step,
)

__all__ = [
    "DEVICE_BYTES",
    "HostBatches",
    "HostTrainingArrays",
    "JsonLinesSink",
    "MetricSink",
    "StepSpec",
    "TrainState",
    "Trainer",
    "TrainingArrays",
    "apply_gradients",
    "data_fits_device",
    "data_mesh",
    "init_state",
    "labeled_pool",
    "learning_rate",
    "make_optimizer",
    "sample_batch",
    "step_gradients",
    "take_steps",
    "train_step",
    "training_arrays",
]
