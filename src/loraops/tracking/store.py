"""The MLflow connection: where the store is, and a guarded handle on one MLflow run.

Every call of the tracking package to MLflow goes through `Tracker.call`: the first failure
(server down, HTTP error, full disk) is logged once as a warning and every later call is skipped, so an
outage costs one short timeout and never a training run; the run folder stays the source of truth.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from loraops.errors import LoraopsError
from loraops.paths import MLFLOW_STORE_DIR
from loraops.secrets import public_url, scrub, secret_values, without_url_credentials

log = logging.getLogger(__name__)

STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
# MLflow retries a failed request for minutes by default; during an outage that would stall training.
# setdefault: a user who wants MLflow's own behaviour sets these in the environment or .env.
_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_DISABLE_TELEMETRY": "true",  # loraops sends nothing anywhere the user did not name
}
# Batch limits of MLflow's log_batch (mlflow.utils.validation).
_PARAMS_PER_BATCH, _METRICS_PER_BATCH = 100, 1000

T = TypeVar("T")


def import_mlflow() -> Any:
    """mlflow, with loraops' request limits; a clear error when the optional dependency is missing."""
    for name, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        import mlflow
    except ImportError:
        raise LoraopsError(
            "tracking=mlflow needs MLflow, which is not installed: pip install 'loraops[mlflow]'"
        ) from None
    return mlflow


def embedded_uri(project: Path | None = None) -> str:
    """The store used when MLFLOW_TRACKING_URI is not set: a SQLite file under <project>/mlruns/."""
    return f"sqlite:///{(project or Path.cwd()).resolve() / MLFLOW_STORE_DIR / STORE_FILE}"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI (environment or .env), else the embedded store of the project (the working folder)."""
    return os.environ.get("MLFLOW_TRACKING_URI", "").strip() or embedded_uri()


def forwardable_uri(uri: str | None) -> str | None:
    """`uri` when a remote job can log to it directly: a server URL without credentials and not this machine's
    loopback (which would be the server's own there); None otherwise, and the run is imported after `pull`."""
    if not uri:
        return None
    parts = urlsplit(uri.strip())
    local = parts.hostname in (None, "localhost", "127.0.0.1", "::1", "0.0.0.0")
    credentials = "@" in parts.netloc
    return uri.strip() if parts.scheme in ("http", "https") and not local and not credentials else None


def clean(text: str, uri: str | None = None) -> str:
    """`text` without the URI's credentials and with every secret value of the environment replaced."""
    return scrub(without_url_credentials(text, uri or tracking_uri()), secret_values(os.environ).values())


@dataclass
class Tracker:
    """A guarded handle on one MLflow run (or on none: tracking off, or failed)."""

    client: Any = None
    uri: str = ""
    run_id: str | None = None
    failed: bool = False

    @classmethod
    def connect(cls, uri: str | None = None) -> Tracker:
        """A client of the store; opening a SQLite store creates (or migrates) it, and may fail like any call."""
        mlflow = import_mlflow()  # missing: the user's to fix, raised, not an outage
        tracker = cls(uri=uri or tracking_uri())
        tracker.client = tracker._attempt("opening the store", _open_client, mlflow, tracker.uri)
        return tracker

    @property
    def active(self) -> bool:
        return self.client is not None and not self.failed

    @property
    def logging(self) -> bool:
        """Bound to a run and still working: calls that log will be tried."""
        return self.active and self.run_id is not None

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """fn(*args, **kwargs), or None once tracking failed; the first failure is logged as one warning."""
        return self._attempt(what, fn, *args, **kwargs) if self.active else None

    def _attempt(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # any failure of the tracker must leave the command running
            self.failed = True
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            log.warning(
                "MLflow tracking at %s failed while %s (%s): going on without it; the run folder keeps "
                "every record, and the next command that uses the run adds what MLflow is missing",
                public_url(self.uri),
                what,
                clean(first, self.uri),
            )
            return None

    def log_metrics(self, points: list[tuple[str, float, int]]) -> None:
        """(key, value, step) points, in as few requests as MLflow allows."""
        if not self.logging:
            return
        from mlflow.entities import Metric

        stamp = _now_ms()
        metrics = [Metric(key, float(value), stamp, int(step)) for key, value, step in points]
        for start in range(0, len(metrics), _METRICS_PER_BATCH):
            self._batch("logging metrics", metrics=metrics[start : start + _METRICS_PER_BATCH])

    def log_params(self, params: Mapping[str, str]) -> None:
        self._log_pairs("logging params", "params", params)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._log_pairs("setting tags", "tags", tags)

    def _log_pairs(self, what: str, kind: str, pairs: Mapping[str, str]) -> None:
        """Params or tags, scrubbed of secrets and cut to MLflow's length limit, in batches."""
        if not self.logging:
            return
        from mlflow.entities import Param, RunTag
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

        entity, limit = (Param, MAX_PARAM_VAL_LENGTH) if kind == "params" else (RunTag, MAX_TAG_VAL_LENGTH)
        items = [entity(k, clean(str(v), self.uri)[:limit]) for k, v in pairs.items()]
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            self._batch(what, **{kind: items[start : start + _PARAMS_PER_BATCH]})

    def log_text(self, text: str, artifact_file: str) -> None:
        """A text artifact, scrubbed of every secret value first."""
        if self.logging:
            self.call(
                f"logging {artifact_file}", self.client.log_text, self.run_id, clean(text, self.uri), artifact_file
            )

    def log_folder(self, folder: Path, artifact_path: str) -> None:
        if self.logging and folder.is_dir():
            self.call(f"logging {artifact_path}/", self.client.log_artifacts, self.run_id, str(folder), artifact_path)

    def terminate(self, status: str) -> None:
        if self.logging:
            self.call("closing the run", self.client.set_terminated, self.run_id, status)

    def _batch(self, what: str, **entities: Any) -> None:
        if self.logging and any(entities.values()):
            self.call(what, self.client.log_batch, self.run_id, **entities)


OFF = Tracker()  # tracking=tensorboard, or a process that does not log (the other ranks of a DDP run)


def _open_client(mlflow: Any, uri: str) -> Any:
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return mlflow.MlflowClient(tracking_uri=uri)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def experiment_id(tracker: Tracker, name: str) -> str | None:
    """The experiment's id, created on first use; with a SQLite store, artifacts go to artifacts/ beside it."""
    if not tracker.active:
        return None
    found = tracker.call("finding the experiment", tracker.client.get_experiment_by_name, name)
    if found is not None or not tracker.active:
        return None if found is None else str(found.experiment_id)
    location = None
    if tracker.uri.startswith("sqlite:///"):  # else MLflow's default, ./mlruns of whatever folder a command runs in
        location = str(Path(tracker.uri.removeprefix("sqlite:///")).parent / ARTIFACTS_DIR)
    created = tracker.call("creating the experiment", tracker.client.create_experiment, name, location)
    return None if created is None else str(created)


def find_run(tracker: Tracker, run_id: str | None) -> Any:
    """The MLflow run `run_id` in this store (not deleted), or None; a failure to ask counts as an outage."""
    if not run_id or not tracker.active:
        return None

    def lookup() -> Any:
        found = missing_as_none(tracker.client.get_run, run_id)
        return found if found is not None and found.info.lifecycle_stage == "active" else None

    return tracker.call("finding the run", lookup)


def missing_as_none(fn: Callable[..., T], *args: Any) -> T | None:
    """fn(*args), or None when MLflow says the thing asked for does not exist; other errors propagate."""
    from mlflow.exceptions import MlflowException

    try:
        return fn(*args)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
