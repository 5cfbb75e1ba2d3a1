"""Experiment tracking: TensorBoard event files in the run folder, MLflow, or both (config key `tracking`).

A sink: train, eval, compare, publish and `remote pull` each hand it plain records (the run folder, typed
records, scores); it imports no command. Only this package talks to MLflow and writes TensorBoard files,
and MLflow only when `tracking` includes it (mlflow is then imported, an optional dependency).

    tensorboard.py  event files in the run's logs/: the Trainer's curves, eval scores
    store.py     the store's URI (MLFLOW_TRACKING_URI, else mlruns/mlflow.db) and the guarded Tracker
    link.py      the MLflow run of a run folder (tracking.json), found, created or rebuilt from its records
    records.py   params, lineage tags and metric names, read from a run folder's records
    callback.py  per-step training metrics
    results.py   eval scores and compare verdicts
    registry.py  publish's model versions and the `champion` alias that compare measures against
    importer.py  runs pulled from a server
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loraops.runs import RunDir
from loraops.tracking import tensorboard
from loraops.tracking.callback import TrackingCallback
from loraops.tracking.link import finish, open_run, start
from loraops.tracking.settings import Settings
from loraops.tracking.store import OFF, Tracker

__all__ = ["OFF", "Settings", "Tracker", "TrainingTrackers", "start_training"]


@dataclass
class TrainingTrackers:
    """The trackers of one training run in this process, and the Trainer callbacks that feed them."""

    run: RunDir | None = None
    mlflow: Tracker = field(default_factory=Tracker)  # off until a run is started
    callbacks: list[Any] = field(default_factory=list)

    def finish(self) -> None:
        """Close TensorBoard's files; give MLflow the records, adapter and final status. Safe on any outcome."""
        for callback in self.callbacks:
            writer = getattr(callback, "tb_writer", None)
            if writer is not None:
                writer.close()
        if self.run is not None:
            finish(self.mlflow, self.run)


def start_training(run: RunDir, settings: Settings) -> TrainingTrackers:
    """The trackers of a training run that starts (or resumes): its MLflow run with params and lineage tags,
    and TensorBoard in its logs/ folder, as `settings` asks."""
    callbacks = [tensorboard.trainer_callback(run)] if settings.tensorboard else []
    tracker = open_run(run, settings, training=True)
    start(tracker, run)
    if tracker.logging:
        callbacks.append(TrackingCallback(tracker))
    return TrainingTrackers(run, tracker, callbacks)
