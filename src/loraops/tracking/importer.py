"""Runs pulled from a server (`loraops remote pull`) into this machine's tracking store.

The rule: a remote job logs straight to the tracking server when MLFLOW_TRACKING_URI here names one the
server can reach (an http(s) URL without credentials, not localhost: it is forwarded to the job). Otherwise
it logs to the server's own embedded store, and after `pull` the run is imported here: a run whose config
has tracking mlflow or both, and whose tracking.json names no run in this store, gets a new MLflow run
rebuilt from its records (params, tags, loss and validation curves, eval scores, records, adapter),
tagged with the server-side run id, so the next pull adds to it instead of importing it again.
"""

from __future__ import annotations

import logging

from loraops.errors import LoraopsError
from loraops.runs import RunDir
from loraops.tracking.link import open_run
from loraops.tracking.settings import Settings

log = logging.getLogger(__name__)


def import_pulled(run: RunDir) -> None:
    """Make sure a pulled run (trained with MLflow tracking) has its MLflow run in this machine's store."""
    if not run.config_path.is_file():  # a run that stopped before it began: nothing to track
        return
    try:
        config = run.read_config()
        settings = Settings(str(config.get("tracking", "tensorboard")), str(config.get("mlflow_experiment", "loraops")))
        if settings.mlflow:
            open_run(run, settings)
    except LoraopsError as exc:  # mlflow missing here, or a broken record: the pull itself succeeded
        log.warning("%s: not imported into MLflow (%s)", run.name, exc)
