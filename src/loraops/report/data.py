"""What a report shows, collected from a run folder and its eval records: plain data, no HTML.

Every file is read through its owner: the run folder through RunDir, the metrics folder (scores,
predictions, the last comparison) through MetricsRecords. A run that was never evaluated or
compared gets a report all the same, with the command that would fill the gap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loraops.errors import LoraopsError
from loraops.eval.records import MetricsRecords
from loraops.paths import RUNS_DIR, portable_path
from loraops.records import SCORED, Manifest, Prediction, RunMetrics
from loraops.runs import RunDir, find_run
from loraops.tracking.link import read_link

Point = tuple[float, float]


@dataclass
class Training:
    """metrics.json's training side: the curves and the numbers a reader checks first."""

    loss: list[Point] = field(default_factory=list)  # (step, training loss)
    learning_rate: list[Point] = field(default_factory=list)  # (step, lr)
    validation: list[dict[str, float]] = field(default_factory=list)  # selection.validation_curve points
    select_metric: str | None = None
    best: dict[str, Any] | None = None  # the validation that chose the kept adapter
    stopped_early: dict[str, Any] | None = None
    facts: list[tuple[str, str]] = field(default_factory=list)

    @property
    def recorded(self) -> bool:
        return bool(self.loss or self.validation)

    def validation_series(self, key: str) -> list[Point]:
        return [(p["step"], p[key]) for p in self.validation if isinstance(p.get(key), (int, float))]


@dataclass
class Evaluation:
    """The eval records of the run: scores per split, the last comparison, a sample of predictions."""

    splits: list[str] = field(default_factory=list)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> metric -> value
    comparison: dict[str, Any] | None = None  # Comparison.as_dict
    stale: list[str] = field(default_factory=list)  # splits evaluated again after the comparison
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # split -> first prediction rows
    counts: dict[str, int] = field(default_factory=dict)  # split -> examples evaluated
    todo: list[str] = field(default_factory=list)  # the commands, in order, that produce what is missing

    @property
    def evaluated(self) -> bool:
        return bool(self.splits)


@dataclass
class RunReport:
    name: str
    where: str  # the run folder, relative to the working folder when inside it
    status: str | None
    config: dict[str, Any]
    training: Training
    evaluation: Evaluation
    lineage: dict[str, list[tuple[str, str]]]  # section -> (what, value)


@dataclass
class ReportData:
    runs: list[RunReport]
    generated_at: str
    metrics_dir: str


def resolve_runs(specs: list[str], runs_dir: str | Path = RUNS_DIR) -> list[RunDir]:
    """The named runs (folders, `latest`, bare names), each once, in the order given."""
    runs: list[RunDir] = []
    for spec in specs:
        run, adapter = find_run(spec, runs_dir)
        if run is None:
            what = "an adapter folder outside any run" if adapter else "no such run folder"
            raise LoraopsError(f"{spec}: {what}; a report needs a run (`make train` makes one)")
        if run.path not in [r.path for r in runs]:
            runs.append(run)
    return runs


def collect(runs: list[RunDir], metrics_dir: str | Path, samples: int = 8) -> ReportData:
    reports = [collect_run(run, MetricsRecords.of(metrics_dir, run.name), samples) for run in runs]
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return ReportData(reports, stamp, str(metrics_dir))


def collect_run(run: RunDir, records: MetricsRecords, samples: int = 8) -> RunReport:
    manifest, config = run.read_manifest(), run.read_config()
    return RunReport(
        name=run.name,
        where=portable_path(run.path),
        status=manifest.status,
        config=config,
        training=training(run.read_metrics(), run),
        evaluation=evaluation(records, portable_path(run.path), samples),
        lineage=lineage(manifest, config, read_link(run)),
    )


# --- training -----------------------------------------------------------------------------------


def training(metrics: RunMetrics, run: RunDir | None = None) -> Training:
    history = metrics.loss_history
    validation = metrics.validation
    result = Training(
        loss=[(h.step, h.loss) for h in history],
        learning_rate=[(h.step, h.learning_rate) for h in history if h.learning_rate is not None],
        validation=list(validation.curve) if validation else [],
        select_metric=validation.select_metric if validation else None,
        best=validation.best if validation else None,
        stopped_early=validation.stopped_early if validation else None,
        facts=training_facts(metrics),
    )
    if history and not result.learning_rate and run is not None:
        result.learning_rate = tensorboard_lr(run)  # runs trained before metrics.json kept the schedule
    return result


def training_facts(metrics: RunMetrics) -> list[tuple[str, str]]:
    data, m = metrics.data, metrics
    facts = [
        ("optimizer steps", m.global_steps),
        ("epochs", m.epochs_completed),
        ("training loss, first → last log", _arrow(m.first_logged_loss, m.final_logged_loss)),
        ("mean training loss per epoch", ", ".join(f"{v:.4g}" for v in m.epoch_train_loss) or None),
        ("training examples", data.get("examples")),
        ("truncated examples", data.get("truncated")),
        ("tokens trained on", m.train_tokens),
        ("runtime", f"{m.runtime_s:.1f} s" if m.runtime_s is not None else None),
        ("tokens per second", m.tokens_per_second),
        ("precision", m.precision),
        ("device", m.device),
        ("resumed from", m.resumed_from),
    ]
    return [(k, _text(v)) for k, v in facts if v is not None]


def tensorboard_lr(run: RunDir) -> list[Point]:
    """The learning rate that the Trainer logged to TensorBoard; [] when there is none."""
    if not run.logs_dir.is_dir():
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # it narrates every event file it opens
    events = EventAccumulator(str(run.logs_dir), size_guidance={"scalars": 0})
    events.Reload()
    if "train/learning_rate" not in events.Tags().get("scalars", []):
        return []
    return [(e.step, e.value) for e in events.Scalars("train/learning_rate")]


# --- evaluation ---------------------------------------------------------------------------------


def evaluation(records: MetricsRecords, where: str, samples: int = 8) -> Evaluation:
    comparison = records.comparison()
    result = Evaluation(splits=records.splits(), comparison=comparison.as_dict() if comparison else None)
    for split in result.splits:
        result.scores[split] = {m: v for m, v in (records.split_metrics(split) or {}).items() if m in SCORED}
        rows = _predictions(records, split)
        result.counts[split] = len(rows)
        result.samples[split] = [_sample(row) for row in rows[:samples]]
    if result.comparison is not None:
        compared = records.comparison_path.stat().st_mtime
        paths = [(s, records.split_path(s)) for s in result.splits]
        result.stale = [s for s, path in paths if path.is_file() and path.stat().st_mtime > compared]
    result.todo = _todo(result, where)
    return result


def _predictions(records: MetricsRecords, split: str) -> list[Prediction]:
    """The split's prediction rows; none when they are gone, so the rest of the report still shows."""
    try:
        return records.predictions(split) if records.split_record(split) else []
    except LoraopsError:
        return []


def _sample(row: Prediction) -> dict[str, Any]:
    return row.model_dump(include={"id", "path", "line", "prompt", "reference", "prediction", "scores"})


def _todo(result: Evaluation, where: str) -> list[str]:
    """For the latest run these are `make eval`, `make eval-baseline` and `make compare`."""
    compare = f"loraops compare run={where}"
    if not result.evaluated:
        return [f"loraops eval model={where}", f"loraops eval --config-name eval_baseline model={where}", compare]
    return [compare] if result.comparison is None or result.stale else []


# --- lineage ------------------------------------------------------------------------------------


def lineage(
    manifest: Manifest, config: dict[str, Any], tracking: dict[str, Any] | None = None
) -> dict[str, list[tuple[str, str]]]:
    """Where the run came from, by section; the manifest's secrets were redacted when it was written."""
    data, commit = manifest.data, manifest.git.commit
    dirty = " (uncommitted changes)" if manifest.git.dirty else ""
    sections = {
        "model and code": [
            ("base model", manifest.model_name or config.get("model_name")),
            ("resolved to", manifest.resolved_model),
            ("chat template", manifest.chat_template),
            ("git commit", f"{commit}{dirty}" if commit else "not a git checkout"),
            ("MLflow run", (tracking or {}).get("run_id")),
            ("MLflow store", (tracking or {}).get("tracking_uri")),
        ],
        "environment and libraries": [
            *((k.replace("_", " "), v) for k, v in manifest.environment.items()),
            *manifest.libraries.items(),
        ],
        "data": [
            *(("source: " + k, v) for k, v in data.source.items()),
            ("dataset sha256", data.dataset_sha256),
            *((f"file {f.name}", f.sha256) for f in data.files),
            *(("validation: " + k, v) for k, v in (manifest.validation or {}).items()),
        ],
    }
    return {name: [(k, _text(v)) for k, v in rows if v is not None] for name, rows in sections.items()}


# --- several runs -------------------------------------------------------------------------------


def score_table(runs: list[RunReport]) -> list[tuple[str, str, list[float | None]]]:
    """(split, metric, one score per run) for every split and metric any of the runs was scored on."""
    keys: list[tuple[str, str]] = []
    for run in runs:
        keys += [(s, m) for s, scores in run.evaluation.scores.items() for m in scores if (s, m) not in keys]
    return [(s, m, [run.evaluation.scores.get(s, {}).get(m) for run in runs]) for s, m in keys]


def config_differences(runs: list[RunReport]) -> list[tuple[str, list[str]]]:
    """The config keys (dotted) whose values are not the same in every run, with each run's value."""
    flat = [_flatten(run.config) for run in runs]
    keys = sorted({k for f in flat for k in f})
    return [(k, [_text(f.get(k, "—")) for f in flat]) for k in keys if len({repr(f.get(k, "—")) for f in flat}) > 1]


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _arrow(first: Any, last: Any) -> str | None:
    return None if first is None or last is None else f"{first:.4g} → {last:.4g}"


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    return str(value)
