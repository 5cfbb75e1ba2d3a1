"""After a publish: the MLflow registry gets a version (with tracking mlflow or both) and the run becomes the
reference that `compare` measures new runs against."""

from __future__ import annotations

import logging

from loraops.config import CompareConfig
from loraops.publish.mlflow_model import mlflow_model_writer
from loraops.records import Reference
from loraops.reference import record_reference, registered_model
from loraops.runs import RunDir
from loraops.tracking import Settings
from loraops.tracking.registry import Publication, register
from loraops.tracking.settings import MLFLOW_MODES

log = logging.getLogger(__name__)


def follow_run_tracking(run: RunDir, cfg: CompareConfig) -> CompareConfig:
    """Publish where the run was tracked (its tracking and MLflow experiment), when the command chose none."""
    trained = run.train_config()
    if trained.tracking == cfg.tracking:
        return cfg
    log.info("tracking=%s, as run %s was trained with (tracking=... chooses another)", trained.tracking, run.name)
    return cfg.model_copy(update={"tracking": trained.tracking, "mlflow_experiment": trained.mlflow_experiment})


def warn_if_untracked(run: RunDir, cfg: CompareConfig) -> None:
    trained = run.train_config().tracking
    if trained in MLFLOW_MODES and cfg.tracking not in MLFLOW_MODES:
        log.warning(
            "run %s was tracked in MLflow, but this publish is not (tracking=%s): the registry gets no version",
            run.name,
            cfg.tracking,
        )


def record_publication(run: RunDir, publication: Publication, cfg: CompareConfig) -> Reference:
    """Register the published model (a failure of MLflow is said once and leaves the publish standing), then
    write the reference record, which says whether the registry got it."""
    writer = mlflow_model_writer(run, publication.folder, publication.merged)
    version = register(run, publication, Settings.of(cfg), registered_model(cfg, run), writer)
    return record_reference(run, publication.destination, cfg.reference_path, version)
