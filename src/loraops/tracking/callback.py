"""Per-step training metrics into MLflow, through the run's guarded Tracker.

transformers' own MLflowCallback is not used: it reads its own MLFLOW_* variables, starts its own
run, and a tracking failure in it stops the training; this one logs through loraops.tracking, whose
first failure is one warning and never the end of a run.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from loraops.tracking.records import trainer_points
from loraops.tracking.store import Tracker


class TrackingCallback(TrainerCallback):
    """Loss, learning rate, grad norm (train/...) and validation metrics (val/...) at the step they belong to."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and state.is_world_process_zero and self.tracker.logging:
            self.tracker.log_metrics(trainer_points(logs, int(state.global_step)))
