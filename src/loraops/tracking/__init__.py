"""Experiment tracking: TensorBoard event files in the run folder, MLflow, or both (config key `tracking`).

Train, eval, compare, publish and `remote pull` each make one call here; only this package talks to
MLflow, and only when `tracking` includes it (mlflow is then imported, an optional dependency).

    store.py     the store's URI (MLFLOW_TRACKING_URI, else mlruns/mlflow.db) and the guarded Tracker
    link.py      the MLflow run of a run folder (tracking.json), found, created or rebuilt from its records
    records.py   params, lineage tags and metric names, read from a run folder's records
    callback.py  per-step training metrics
    results.py   eval scores and compare verdicts
    registry.py  publish's model versions and the `champion` alias that compare measures against
    importer.py  runs pulled from a server
"""

from __future__ import annotations

from typing import Any

from loraops.runs import RunDir
from loraops.tracking.settings import Settings
from loraops.tracking.store import OFF, Tracker

__all__ = ["OFF", "Settings", "Tracker", "finish_training", "start_training", "trainer_callbacks"]


def start_training(run: RunDir, settings: Settings) -> Tracker:
    """The MLflow run of a training run that starts (or resumes), with its params and lineage tags."""
    from loraops.tracking.link import open_run, start

    tracker = open_run(run, settings, training=True)
    start(tracker, run)
    return tracker


def trainer_callbacks(tracker: Tracker) -> list[Any]:
    if not tracker.logging:
        return []
    from loraops.tracking.callback import TrackingCallback

    return [TrackingCallback(tracker)]


def finish_training(tracker: Tracker, run: RunDir) -> None:
    """Records, adapter and final status, once the run folder has them; safe to call on any outcome."""
    from loraops.tracking.link import finish

    finish(tracker, run)
