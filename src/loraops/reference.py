"""The reference record: the published run that `compare` measures new runs against, and its history.

`publish` writes it; `compare` and the publish gate read it. Nothing else touches these files.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loraops.atomic import read_json, write_json
from loraops.errors import LoraopsError
from loraops.runs import DEFAULT_RUNS_DIR, RunDir

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


def reference_run_dir(record: dict[str, Any]) -> str:
    """Where the reference run's folder was when it was published."""
    return str(record.get("run_dir") or Path(DEFAULT_RUNS_DIR) / record["run"])


def record_reference(run: RunDir, destination: str, reference_file: str | Path) -> dict[str, Any]:
    """Make the published run the reference for `compare`; keep the previous one in the history."""
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
    }
    write_json(path, record)
    return record
