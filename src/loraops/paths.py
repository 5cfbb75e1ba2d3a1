"""Where things live by default: the project's folders, relative to the working folder, and the caches.

Every default location is spelled here once; configs default to these values and commands ask
this module, so moving a folder is a change of one line.

    outputs/runs/<run>/          run folders; outputs/runs/latest links the newest finished one
    outputs/remote/<job>/        remote jobs: log, pid, exit code, run file (on the server and here)
    artifacts/metrics/<name>/    what `loraops eval` wrote, and the last comparison
    artifacts/models/<run>/      published runs
    artifacts/exports/<run>/     exported runs: <format>/ (gguf, vllm)
    artifacts/reports/           HTML reports
    artifacts/reference.json     the published reference run
    models/                      converted base models (LORAOPS_MODELS_DIR)
    mlruns/                      the embedded MLflow store
    ~/.cache/loraops/            downloaded data (LORAOPS_CACHE_DIR)
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

RUNS_DIR = "outputs/runs"
LATEST = "latest"
LATEST_RUN = f"{RUNS_DIR}/{LATEST}"
JOBS_DIR = "outputs/remote"
ARTIFACTS_DIR = "artifacts"
METRICS = "metrics"
PUBLISHED = "models"
EXPORTS = "exports"
REPORTS = "reports"
REFERENCE_FILE = "reference.json"
METRICS_DIR = f"{ARTIFACTS_DIR}/{METRICS}"
MLFLOW_STORE_DIR = "mlruns"
MODELS_DIR_ENV, CACHE_DIR_ENV = "LORAOPS_MODELS_DIR", "LORAOPS_CACHE_DIR"


def metrics_dir(artifacts_dir: str | Path) -> Path:
    return Path(artifacts_dir) / METRICS


def published_dir(artifacts_dir: str | Path) -> Path:
    """Where `loraops publish` puts published runs."""
    return Path(artifacts_dir) / PUBLISHED


def exports_dir(artifacts_dir: str | Path) -> Path:
    """Where `loraops export` puts exported runs."""
    return Path(artifacts_dir) / EXPORTS


def reports_dir(artifacts_dir: str | Path) -> Path:
    return Path(artifacts_dir) / REPORTS


def reference_file(artifacts_dir: str | Path) -> Path:
    return Path(artifacts_dir) / REFERENCE_FILE


def shipped_configs() -> Path:
    """The configs inside the package: the defaults, the GPU presets and the accelerate launch configs."""
    return Path(str(resources.files("loraops") / "configs"))


def models_dir() -> Path:
    """Where converted base models live: LORAOPS_MODELS_DIR, else ./models (git-ignored)."""
    return Path(os.environ.get(MODELS_DIR_ENV, "models")).resolve()


def cache_dir(kind: str) -> Path:
    """A cache of downloaded files: LORAOPS_CACHE_DIR/<kind>, else ~/.cache/loraops/<kind>."""
    base = os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "loraops"
    return Path(base) / kind


def portable_path(path: Path) -> str:
    """Relative to the working folder when inside it, so a record survives moving the project."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())
