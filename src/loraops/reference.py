"""The reference: the published run that `compare` measures new runs against, and its history.

`publish` records it; `compare` and the publish gate ask for it. Nothing else touches these files.

With tracking mlflow (or both), the published reference is the MLflow registry's `champion` of the run's
registered model (publish moves the alias; anyone may move it back in the MLflow UI), with the local
record as the fallback: it is used when the registry cannot be reached, has no champion, or missed the
latest publish (the record says whether that publish reached the registry).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from loraops.config import CompareConfig
from loraops.errors import LoraopsError
from loraops.models import public_info
from loraops.paths import RUNS_DIR, portable_path
from loraops.records import Reference, RegistryVersion
from loraops.runs import RunDir
from loraops.tracking.registry import champion, model_name
from loraops.tracking.settings import Settings

log = logging.getLogger(__name__)

HISTORY_FILE = "reference_history.jsonl"


def read_reference(reference_file: str | Path) -> Reference | None:
    """The published reference run, as recorded by `loraops publish`; None before any publish."""
    path = Path(reference_file)
    if not path.is_file():
        return None
    try:
        return Reference.read(path)
    except LoraopsError as exc:
        raise LoraopsError(f"{exc} (the references before it are in {HISTORY_FILE})") from None


def registered_model(cfg: CompareConfig, run: RunDir) -> str:
    """The MLflow registered model the run's publications go to: one champion per base model."""
    return model_name(cfg.registered_model, public_info(run.base_model()).label)


def published_reference(cfg: CompareConfig, run: RunDir) -> Reference | None:
    """The published run that `run` is measured against (see the module's rule); None before any publish."""
    local = read_reference(cfg.reference_path)
    settings = Settings.of(cfg)
    if not settings.mlflow:
        return local
    name = registered_model(cfg, run)
    found = champion(settings, name)
    if found is None:
        return local
    if local is not None and local.registry is None:
        alias = found.registry.alias if found.registry else "champion"
        log.warning(
            "the last publish (%s) did not reach the MLflow registry; comparing against it, not against %s@%s (%s)",
            local.run,
            name,
            alias,
            found.run,
        )
        return local
    return found


def reference_run_dir(reference: Reference) -> str:
    """Where the reference run's folder was when it was published."""
    return reference.run_dir or str(Path(RUNS_DIR) / reference.run)


def record_reference(
    run: RunDir, destination: str, reference_file: str | Path, registry: RegistryVersion | None = None
) -> Reference:
    """Make the published run the reference for `compare`; keep the previous one in the history.

    `registry` is the MLflow model version publish registered (None: it did not reach a registry).
    """
    path = Path(reference_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = read_reference(path)
    if previous is not None:
        with open(path.with_name(HISTORY_FILE), "a", encoding="utf-8") as fh:
            fh.write(previous.model_dump_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # the history line must exist before the record it replaces is gone
    record = Reference(
        run=run.name,
        run_dir=portable_path(run.path),
        published_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        destination=destination,
        registry=registry,
    )
    record.write(path)
    return record
