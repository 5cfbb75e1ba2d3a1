"""Eval scores and compare verdicts into the trackers: a run's into its own MLflow run (and its TensorBoard
logs), an evaluation without a run folder (the base model) into an MLflow run of its own."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from loraops.records import Comparison, Scores
from loraops.runs import RunDir
from loraops.tracking import tensorboard
from loraops.tracking.link import open_run
from loraops.tracking.records import KIND_TAG, comparison_points, comparison_tags, eval_points
from loraops.tracking.settings import Settings
from loraops.tracking.store import Tracker, experiment_id


def record_eval(run: RunDir, scores: Mapping[str, Scores], step: int, files: list[Path], settings: Settings) -> None:
    """Each split's scores as eval/<split>/<metric> at the run's last training step, and the eval's files."""
    if settings.tensorboard:
        tensorboard.write_eval(run, scores, step)
    tracker = open_run(run, settings)
    tracker.log_metrics(eval_points(scores, step))
    _log_files(tracker, files)


def record_model_eval(
    name: str, base_model: str, kind: str, scores: Mapping[str, Scores], files: list[Path], settings: Settings
) -> None:
    """An evaluation without a run folder (the base model, `kind` baseline; or a bare adapter) in a new MLflow run."""
    if not settings.mlflow:
        return
    tracker = Tracker.connect()
    experiment = experiment_id(tracker, settings.experiment)
    if experiment is None:
        return
    tags = {KIND_TAG: kind, "base_model": base_model, "loraops.eval_of": name}
    created = tracker.call("creating the run", tracker.client.create_run, experiment, run_name=name, tags=tags)
    if created is None:
        return
    tracker.run_id = created.info.run_id
    tracker.log_metrics(eval_points(scores, 0))
    _log_files(tracker, files)
    tracker.terminate("FINISHED")


def record_comparison(run: RunDir, comparison: Comparison, settings: Settings) -> None:
    """The verdict (tags), each delta with its interval and p-value (metrics), and the whole record with its flips."""
    tracker = open_run(run, settings)
    if not tracker.logging:
        return
    tracker.log_metrics(comparison_points(comparison, run.read_metrics().global_steps or 0))
    tracker.set_tags(comparison_tags(comparison))
    tracker.log_text(comparison.model_dump_json(indent=2), "compare/comparison.json")


def _log_files(tracker: Tracker, files: list[Path]) -> None:
    for path in files if tracker.logging else ():
        tracker.log_text(path.read_text(encoding="utf-8"), f"eval/{path.name}")
