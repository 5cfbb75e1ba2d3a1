"""Eval scores and compare verdicts into MLflow: a run's into its own MLflow run, the base model's into one of its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loraops.eval.records import MetricsRecords
from loraops.runs import RunDir
from loraops.tracking.link import open_run
from loraops.tracking.records import KIND_TAG, comparison_points, comparison_tags, eval_points
from loraops.tracking.settings import Settings
from loraops.tracking.store import Tracker, experiment_id


def record_eval(run: RunDir, scores: dict[str, dict[str, float]], step: int, folder: Path, settings: Settings) -> None:
    """Each split's scores as eval/<split>/<metric> at the run's last training step, and the eval records."""
    tracker = open_run(run, settings)
    tracker.log_metrics(eval_points(scores, step))
    _log_eval_files(tracker, folder)


def record_model_eval(
    name: str, base_model: str, kind: str, scores: dict[str, dict[str, float]], folder: Path, settings: Settings
) -> None:
    """An evaluation without a run folder (the base model, `kind` baseline; or a bare adapter) in a new MLflow run."""
    if not settings.mlflow:
        return
    tracker = Tracker.connect()
    experiment = experiment_id(tracker, settings.experiment)
    tags = {KIND_TAG: kind, "base_model": base_model, "loraops.eval_of": name}
    created = (
        tracker.call("creating the run", tracker.client.create_run, experiment, run_name=name, tags=tags)
        if experiment is not None
        else None
    )
    if created is None:
        return
    tracker.run_id = created.info.run_id
    tracker.log_metrics(eval_points(scores, 0))
    _log_eval_files(tracker, folder)
    tracker.terminate("FINISHED")


def record_comparison(run: RunDir, comparison: dict[str, Any], settings: Settings) -> None:
    """The verdict (tags), each delta with its interval and p-value (metrics), and the whole record with its flips."""
    tracker = open_run(run, settings)
    if not tracker.logging:
        return
    step = int(run.read_metrics().get("global_steps") or 0)
    tracker.log_metrics(comparison_points(comparison, step))
    tracker.set_tags(comparison_tags(comparison))
    tracker.log_text(json.dumps(comparison, indent=2, default=str), "compare/comparison.json")


def _log_eval_files(tracker: Tracker, folder: Path) -> None:
    comparison = MetricsRecords(folder).comparison_path  # logged by record_comparison, under compare/
    for path in sorted(folder.glob("*.json*")) if tracker.logging else ():
        if path.is_file() and path != comparison:
            tracker.log_text(path.read_text(encoding="utf-8"), f"eval/{path.name}")
