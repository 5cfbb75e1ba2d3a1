"""What a run folder tells MLflow, read from its records: params, lineage tags and metric points.

Pure functions: the live training logger and the importer of a run folder both name things here,
so a run logged live and one rebuilt from its folder carry the same keys.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from loraops.records import Comparison, Manifest, RunMetrics, Scores
from loraops.secrets import redact

RUN_TAG, RUN_DIR_TAG, KIND_TAG = "loraops.run", "loraops.run_dir", "loraops.kind"
IMPORTED_FROM_TAG = "loraops.imported_from"  # the MLflow run id a pulled run had on the server's store
Point = tuple[str, float, int]  # metric key, value, step
_ODD_KEY_CHARACTERS = re.compile(r"[^/\w.\- :]")  # what MLflow refuses in a metric or param name


def metric_key(*parts: str) -> str:
    return _ODD_KEY_CHARACTERS.sub("_", "/".join(parts))


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys, JSON values, secret-looking keys redacted."""
    params: dict[str, str] = {}
    for key, value in redact(dict(config)).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            params.update(flatten_params(value, name + "."))
        else:
            params[metric_key(name)] = value if isinstance(value, str) else json.dumps(value)
    return params


def lineage_tags(manifest: Manifest) -> dict[str, str]:
    """Where the run came from: data fingerprint and source (lakeFS or Hub commit), code commit, base model."""
    source = {f"data.source.{k}": v for k, v in redact(manifest.data.source).items() if _scalar(v)}
    tags = {
        "loraops.status": manifest.status,
        "base_model": manifest.model_name,
        "data.dataset_sha256": manifest.data.dataset_sha256,
        **source,
        "git.commit": manifest.git.commit,
        "git.dirty": manifest.git.dirty,
        "mlflow.source.git.commit": manifest.git.commit,  # the MLflow UI shows this one on the run page
    }
    return {k: str(v) for k, v in tags.items() if v is not None}


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def trainer_points(logs: Mapping[str, Any], step: int) -> list[Point]:
    """One Trainer log as metrics: validation (eval_*) under val/, the rest (loss, lr, grad norm) under train/."""
    return [
        (metric_key("val", k[5:]) if k.startswith("eval_") else metric_key("train", k), float(v), step)
        for k, v in logs.items()
        if _number(v)
    ]


def eval_points(scores: Mapping[str, Scores], step: int) -> list[Point]:
    """`loraops eval` scores: eval/<split>/<metric>."""
    return [
        (metric_key("eval", split, k), float(v), step)
        for split, values in scores.items()
        for k, v in values.items()
        if _number(v)
    ]


def comparison_points(comparison: Comparison, step: int) -> list[Point]:
    """compare's deltas and intervals: compare/<split>/<metric>/{delta,low,high,p}, and compare/improved."""
    points = [
        (metric_key("compare", row.split, row.metric, part), float(value), step)
        for row in comparison.rows
        for part, value in (("delta", row.delta), ("low", row.low), ("high", row.high), ("p", row.p))
        if value is not None and math.isfinite(value)
    ]
    return [*points, ("compare/improved", float(comparison.improved), step)]


def comparison_tags(comparison: Comparison) -> dict[str, str]:
    return {
        "loraops.verdict": comparison.verdict,
        "loraops.compared_with": comparison.reference,
        "loraops.compared_with_kind": comparison.reference_kind,
    }


def history_points(metrics: RunMetrics) -> list[Point]:
    """Every metric a finished run folder records: the logged losses (and learning rates), the validation
    curve, the run's summary numbers (summary/...) and the eval scores."""
    step = metrics.global_steps or 0
    points = [
        (metric_key("train", key), float(value), entry.step)
        for entry in metrics.loss_history
        for key, value in (("loss", entry.loss), ("learning_rate", entry.learning_rate))
        if value is not None
    ]
    curve = metrics.validation.curve if metrics.validation else []
    points += [
        (metric_key("val", k), float(v), int(p["step"]))
        for p in curve
        for k, v in p.items()
        if k not in ("step", "epoch", "seconds") and _number(v)
    ]
    summary = metrics.model_dump(exclude={"eval", "loss_history", "validation", "data"})
    points += [(metric_key("summary", k), float(v), step) for k, v in summary.items() if _number(v)]
    return points + eval_points(metrics.eval, step)
