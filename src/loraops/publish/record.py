"""After a publish: the MLflow registry gets a version (with tracking mlflow or both) and the run becomes the
reference that `compare` measures new runs against."""

from __future__ import annotations

from loraops.config import CompareConfig
from loraops.records import Reference
from loraops.reference import record_reference, registered_model
from loraops.runs import RunDir
from loraops.tracking import Settings
from loraops.tracking.registry import Publication, register


def record_publication(run: RunDir, publication: Publication, cfg: CompareConfig) -> Reference:
    """Register the published model (a failure of MLflow is said once and leaves the publish standing), then
    write the reference record, which says whether the registry got it."""
    version = register(run, publication, Settings.of(cfg), registered_model(cfg, run))
    return record_reference(run, publication.destination, cfg.reference_path, version)
