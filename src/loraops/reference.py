"""The reference record: the published run that `compare` measures new runs against, and its history.

`publish` writes it; `compare` and the publish gate read it. Nothing else touches these files.

With tracking mlflow (or both), the published reference is the MLflow registry's `champion` of the run's
registered model (publish moves the alias; anyone may move it back in the MLflow UI), with the local
record as the fallback: it is used when the registry cannot be reached, has no champion, or missed the
latest publish (the record says whether that publish reached the registry).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loraops.atomic import read_json, write_json
from loraops.errors import LoraopsError
from loraops.runs import DEFAULT_RUNS_DIR, RunDir
from loraops.tracking.settings import Settings

if TYPE_CHECKING:
    from loraops.config import CompareConfig

log = logging.getLogger(__name__)

HISTORY_FILE = "reference_history.jsonl"


def portable_path(path: Path) -> str:
    """Relative to the working folder when inside it, so the record survives moving the project."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def read_reference(reference_file: str | Path) -> dict[str, Any] | None:
    """The published reference run, as recorded by `loraops publish`; None before any publish."""
    path = Path(reference_file)
    if not path.is_file():
        return None
    record = read_json(path)
    if not isinstance(record.get("run"), str):
        raise LoraopsError(f"{path}: the reference record names no run; restore it from {HISTORY_FILE} or delete it")
    return record


def published_reference(cfg: CompareConfig, run: RunDir) -> dict[str, Any] | None:
    """The published run that `run` is measured against (see the module's rule); None before any publish."""
    local = read_reference(cfg.reference_file or "")
    settings = Settings.of(cfg)
    if not settings.mlflow:
        return local
    from loraops.tracking.registry import champion, model_name

    name = model_name(cfg.registered_model, run)
    found = champion(settings, name)
    if found is None:
        return local
    if local is not None and not local.get("registry"):
        log.warning(
            "the last publish (%s) did not reach the MLflow registry; comparing against it, not against %s@%s (%s)",
            local["run"],
            name,
            found["registry"]["alias"],
            found["run"],
        )
        return local
    return found


def reference_run_dir(record: dict[str, Any]) -> str:
    """Where the reference run's folder was when it was published."""
    return str(record.get("run_dir") or Path(DEFAULT_RUNS_DIR) / record["run"])


def record_reference(
    run: RunDir, destination: str, reference_file: str | Path, registry: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Make the published run the reference for `compare`; keep the previous one in the history.

    `registry` is the MLflow model version publish registered (None: it did not reach a registry).
    """
    path = Path(reference_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = read_reference(path)
    if previous is not None:
        with open(path.with_name(HISTORY_FILE), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(previous) + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # the history line must exist before the record it replaces is gone
    record = {
        "run": run.name,
        "run_dir": portable_path(run.path),
        "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "destination": destination,
        **({"registry": registry} if registry else {}),
    }
    write_json(path, record)
    return record
