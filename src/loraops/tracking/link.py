"""Which MLflow run holds a run folder's tracking: the one tracking.json names, or one rebuilt from the folder.

The rule every command follows: the MLflow run that the run folder's tracking.json names, if this
machine's tracking store has it; otherwise (trained elsewhere and pulled, trained during an outage,
trained with tracking=tensorboard, or the store was moved) a run rebuilt from the folder's records,
found again next time by tracking.json, or for a pulled run by the tag naming its id on the server.
A run whose records did not all reach MLflow (`complete` false) gets the missing ones the next time.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from loraops.atomic import read_json, write_json
from loraops.errors import LoraopsError
from loraops.paths import portable_path
from loraops.records import FAILED, FINISHED, INTERRUPTED
from loraops.runs import RunDir
from loraops.secrets import public_url
from loraops.tracking.records import (
    IMPORTED_FROM_TAG,
    KIND_TAG,
    RUN_DIR_TAG,
    RUN_TAG,
    Point,
    flatten_params,
    history_points,
    lineage_tags,
)
from loraops.tracking.settings import Settings
from loraops.tracking.store import OFF, Tracker, experiment_id, find_run

log = logging.getLogger(__name__)

_MLFLOW_STATUS = {FINISHED: "FINISHED", FAILED: "FAILED", INTERRUPTED: "KILLED"}


def read_link(run: RunDir) -> dict[str, Any]:
    """tracking.json, or {} when there is none (a broken one is reported and rebuilt)."""
    if not run.tracking_path.is_file():
        return {}
    try:
        return read_json(run.tracking_path)
    except LoraopsError as exc:
        log.warning("%s; the run's MLflow run is looked up again", exc)
        return {}


def _write_link(
    run: RunDir, tracker: Tracker, experiment: str | None, complete: bool, imported_from: dict[str, Any] | None
) -> None:
    link = {
        "run_id": tracker.run_id,
        "experiment_id": experiment,
        "tracking_uri": public_url(tracker.uri),
        "complete": complete,
        **({"imported_from": imported_from} if imported_from else {}),
    }
    write_json(run.tracking_path, link)


def open_run(run: RunDir, settings: Settings, *, training: bool = False) -> Tracker:
    """A Tracker bound to the run's MLflow run, found or created; records it lacks are added, except while
    `training` (the trainer logs them as it goes). OFF without MLflow; a failure leaves it inactive."""
    if not settings.mlflow:
        return OFF
    tracker, link = Tracker.connect(), read_link(run)
    found = find_run(tracker, _run_id(link))
    imported_from = None if found is not None or not _run_id(link) else _origin(link)
    found = found or _imported_copy(tracker, settings, imported_from)
    experiment = found.info.experiment_id if found is not None else experiment_id(tracker, settings.experiment)
    if found is None and experiment is not None:
        found = _create(tracker, run, experiment, imported_from)
    if found is None:
        return tracker  # failed, and said so once: the command goes on without MLflow
    tracker.run_id = found.info.run_id
    imported_from = imported_from or link.get("imported_from")
    if link.get("complete") is True and _run_id(link) == tracker.run_id:
        return tracker
    _write_link(run, tracker, experiment, False, imported_from)
    if not training:
        sync(tracker, run, found)
        _write_link(run, tracker, experiment, tracker.active, imported_from)
    return tracker


def _run_id(link: dict[str, Any]) -> str | None:
    """The recorded MLflow run id; anything but an id (a hand edit, a broken pull) counts as none."""
    run_id = link.get("run_id")
    return run_id if isinstance(run_id, str) and run_id.isalnum() else None


def _origin(link: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": _run_id(link), "tracking_uri": link.get("tracking_uri")}


def _imported_copy(tracker: Tracker, settings: Settings, origin: dict[str, Any] | None) -> Any:
    """The run an earlier import made from the same server run (a later `pull` brought its tracking.json back)."""
    if origin is None or not tracker.active:
        return None
    experiment = tracker.call("finding the experiment", tracker.client.get_experiment_by_name, settings.experiment)
    if experiment is None:
        return None
    query = f"tags.`{IMPORTED_FROM_TAG}` = '{origin['run_id']}'"
    runs = tracker.call(
        "finding an imported run", tracker.client.search_runs, [experiment.experiment_id], query, max_results=1
    )
    return runs[0] if runs else None


def _create(tracker: Tracker, run: RunDir, experiment: str, imported_from: dict[str, Any] | None) -> Any:
    tags = {
        RUN_TAG: run.name,
        RUN_DIR_TAG: portable_path(run.path),
        KIND_TAG: "training",
        **({IMPORTED_FROM_TAG: imported_from["run_id"]} if imported_from else {}),
    }
    return tracker.call("creating the run", tracker.client.create_run, experiment, run_name=run.name, tags=tags)


def start(tracker: Tracker, run: RunDir) -> None:
    """At the start of training (or of its resumption): params and lineage tags, status running."""
    if not tracker.logging:
        return
    found = find_run(tracker, tracker.run_id)
    existing = found.data.params if found is not None else {}
    tracker.log_params({k: v for k, v in flatten_params(run.read_config()).items() if k not in existing})
    tracker.set_tags(lineage_tags(run.read_manifest()))
    if found is not None and found.info.status != "RUNNING":  # a resumed run
        tracker.call("reopening the run", tracker.client.update_run, tracker.run_id, "RUNNING")


def sync(tracker: Tracker, run: RunDir, found: Any = None) -> None:
    """Add to the MLflow run whatever of the run folder it lacks: params, tags, metric points, records, adapter."""
    found = found or find_run(tracker, tracker.run_id)
    if found is None or not tracker.logging:
        return
    params = {k: v for k, v in flatten_params(run.read_config()).items() if k not in found.data.params}
    tracker.log_params(params)
    tracker.set_tags({RUN_TAG: run.name, RUN_DIR_TAG: portable_path(run.path), **lineage_tags(run.read_manifest())})
    tracker.log_metrics(_missing(tracker, found, history_points(run.read_metrics())))
    for record in run.records():
        tracker.log_text(record.read_text(encoding="utf-8"), record.name)
    tracker.log_folder(run.model_dir, "model")
    status = _MLFLOW_STATUS.get(run.status() or "")
    if status and found.info.status != status:
        tracker.terminate(status)


def finish(tracker: Tracker, run: RunDir) -> None:
    """At the end of training, finished or not: the records, the adapter and the final status; tracking.json
    then says whether everything reached MLflow."""
    if not tracker.logging:
        return
    try:
        sync(tracker, run)
        link = read_link(run)
        _write_link(run, tracker, link.get("experiment_id"), tracker.active, link.get("imported_from"))
    except (LoraopsError, OSError) as exc:  # a record it cannot read must not hide how training ended
        log.warning("%s: the last records did not reach MLflow (%s)", run.name, exc)


def _missing(tracker: Tracker, found: Any, points: list[Point]) -> list[Point]:
    """The points the run does not have yet (by key and step), so a sync never logs one twice."""
    by_key: dict[str, list[Point]] = defaultdict(list)
    for point in points:
        by_key[point[0]].append(point)
    missing: list[Point] = []
    for key, group in by_key.items():
        if key not in found.data.metrics:
            missing += group
            continue
        history = tracker.call("reading a metric", tracker.client.get_metric_history, tracker.run_id, key) or []
        logged = {m.step for m in history}
        missing += [p for p in group if p[2] not in logged]
    return missing
