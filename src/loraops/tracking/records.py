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


def lineage_tags(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Where the run came from: data fingerprint and source (lakeFS or Hub commit), code commit, base model."""
    manifest = redact(dict(manifest))
    data = manifest.get("data") or {}
    git = manifest.get("git") or {}
    source = {f"data.source.{k}": v for k, v in (data.get("source") or {}).items() if _scalar(v)}
    tags = {
        "loraops.status": manifest.get("status"),
        "base_model": manifest.get("model_name"),
        "data.dataset_sha256": data.get("dataset_sha256"),
        **source,
        "git.commit": git.get("commit"),
        "git.dirty": git.get("dirty"),
        "mlflow.source.git.commit": git.get("commit"),  # the MLflow UI shows this one on the run page
    }
    return {k: str(v) for k, v in tags.items() if v is not None}


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def trainer_points(logs: Mapping[str, Any], step: int) -> list[Point]:
    """One Trainer log as metrics: validation (eval_*) under val/, the rest (loss, learning rate, grad norm) under train/."""
    return [
        (metric_key("val", k[5:]) if k.startswith("eval_") else metric_key("train", k), float(v), step)
        for k, v in logs.items()
        if _number(v)
    ]


def eval_points(scores: Mapping[str, Mapping[str, Any]], step: int) -> list[Point]:
    """`loraops eval` scores: eval/<split>/<metric>."""
    return [
        (metric_key("eval", split, k), float(v), step)
        for split, values in scores.items()
        for k, v in values.items()
        if _number(v)
    ]


def comparison_points(comparison: Mapping[str, Any], step: int) -> list[Point]:
    """compare's deltas and intervals: compare/<split>/<metric>/{delta,low,high,p}, and compare/improved."""
    points = [
        (metric_key("compare", row["split"], row["metric"], part), float(row[part]), step)
        for row in comparison.get("rows", [])
        for part in ("delta", "low", "high", "p")
        if _number(row.get(part)) and math.isfinite(row[part])
    ]
    return [*points, ("compare/improved", float(comparison.get("verdict") == "IMPROVED"), step)]


def comparison_tags(comparison: Mapping[str, Any]) -> dict[str, str]:
    return {
        "loraops.verdict": str(comparison.get("verdict")),
        "loraops.compared_with": str(comparison.get("reference")),
        "loraops.compared_with_kind": str(comparison.get("reference_kind")),
    }


def history_points(metrics: Mapping[str, Any]) -> list[Point]:
    """Every metric a finished run folder records: the logged losses (and learning rates), the validation
    curve, the run's summary numbers (summary/...) and the eval scores."""
    step = int(metrics.get("global_steps") or 0)
    points = [
        (metric_key("train", k), float(entry[k]), int(entry["step"]))
        for entry in metrics.get("loss_history", [])
        for k in ("loss", "learning_rate")
        if _number(entry.get(k))
    ]
    curve = (metrics.get("validation") or {}).get("curve", [])
    points += [
        (metric_key("val", k), float(v), int(p["step"]))
        for p in curve
        for k, v in p.items()
        if k not in ("step", "epoch", "seconds") and _number(v)
    ]
    points += [(metric_key("summary", k), float(v), step) for k, v in metrics.items() if _number(v)]
    return points + eval_points(metrics.get("eval") or {}, step)
