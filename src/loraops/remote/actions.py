"""The public actions: push, init, train, evaluate, logs, pull."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loraops.remote.commands import JOBS_DIR, PUSH_EXCLUDES, init_command, loraops_command, remote_path, remote_script
from loraops.remote.jobs import _rsync, _ssh, job_run, job_status, latest_job, pull_job, start_job, wait_job
from loraops.remote.settings import RemoteError, RemoteSettings

RUNS_DIR = "outputs/runs"
METRICS_DIR = "artifacts/metrics"


@dataclass
class JobResult:
    exit_code: int
    job: str
    run_dir: Path | None = None  # the pulled run folder, when the job made one
    log: Path | None = None  # the pulled job log


@dataclass
class PullResult:
    run_dir: Path | None
    latest_updated: bool
    metrics_dir: Path | None



def push(settings: RemoteSettings) -> int:
    """Sync the project to REMOTE_DIR (no .venv, outputs, artifacts, models, caches or .env); 0, or raises."""
    _ssh(settings, f"mkdir -p -- {shlex.quote(settings.remote_dir)}", "creating REMOTE_DIR")
    # --delete: a file removed here (a data file!) must not linger there; excluded paths are kept.
    options = ["--delete", *(f"--exclude={pattern}" for pattern in PUSH_EXCLUDES)]
    _rsync(settings, f"{settings.local_dir}/", remote_path(settings) + "/", "pushing the project", options)
    print(f"pushed {settings.local_dir} to {remote_path(settings)}")
    return 0


def init(settings: RemoteSettings, detach: bool = False) -> JobResult:
    """Create the remote .venv and install everything, default model included (`make install` there)."""
    return _job(settings, "init", init_command(settings), detach, pull_results=False)


def train(
    settings: RemoteSettings, config_name: str = "train", overrides: Sequence[str] = (), detach: bool = False
) -> JobResult:
    """`loraops train` on the server; when it ends, pull its run folder (and log) home."""
    return _job(settings, "train", loraops_command("train", config_name, overrides), detach)


def evaluate(
    settings: RemoteSettings, config_name: str = "eval", overrides: Sequence[str] = (), detach: bool = False
) -> JobResult:
    """`loraops eval` (or, with config_name="eval_baseline", the base model) there; pull the metrics."""
    return _job(settings, "eval", loraops_command("eval", config_name, overrides), detach)


def logs(settings: RemoteSettings, job: str | None = None, follow: bool = True) -> int:
    """Print a job's log (the last job by default), following it to the end; its exit code (0 if running)."""
    job = job or latest_job(settings)
    if follow:
        return wait_job(settings, job)
    code = job_status(settings, job)  # first: it names a job that does not exist
    jdir = shlex.quote(f"{JOBS_DIR}/{job}")
    sys.stdout.write(_ssh(settings, remote_script(settings, f"cat {jdir}/job.log"), "reading the job log"))
    return code or 0


def pull(settings: RemoteSettings, run: str | None = None, metrics: bool = True) -> PullResult:
    """Bring a remote run (the remote `latest` by default) and artifacts/metrics home; fix local `latest`."""
    if run and "/" not in run:
        run = f"{RUNS_DIR}/{run}"  # a bare run name
    run = run or _remote_latest_run(settings)
    if not run:
        print(f"no finished run on the server ({settings.remote_dir}/{RUNS_DIR}/latest is missing)", file=sys.stderr)
    run_dir = _pull_run(settings, run) if run else None
    updated = bool(run_dir) and _update_local_latest(run_dir)  # type: ignore[arg-type]
    metrics_dir = _pull_metrics(settings) if metrics else None
    if run_dir:
        print(f"run: {run_dir}" + (" (now latest)" if updated else ""))
    return PullResult(run_dir, updated, metrics_dir)



def _job(
    settings: RemoteSettings, action: str, command: list[str], detach: bool, pull_results: bool = True
) -> JobResult:
    job = start_job(settings, action, command)
    if detach:
        print(f"detached: `loraops remote logs --job {job}` follows it")
        return JobResult(0, job)
    try:
        code = wait_job(settings, job)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; job {job} keeps running on the server: `loraops remote logs` follows it",
              file=sys.stderr)  # fmt: skip
        raise
    log = pull_job(settings, job)
    run = job_run(settings, job) if pull_results else None
    result = pull(settings, run) if pull_results and (run or action == "eval") else None
    print(f"remote job {job} exited with status {code}; log: {log}", file=sys.stderr if code else sys.stdout)
    return JobResult(code, job, result.run_dir if result else None, log)


def _remote_latest_run(settings: RemoteSettings) -> str | None:
    out = _ssh(settings, remote_script(settings, f"readlink {RUNS_DIR}/latest || true"), "finding the latest run")
    return f"{RUNS_DIR}/{out.strip()}" if out.strip() else None


def _pull_run(settings: RemoteSettings, run: str) -> Path:
    """rsync one run folder; `run` is relative to REMOTE_DIR (or absolute), as the job printed it."""
    name = Path(run).name
    local = settings.local_dir / RUNS_DIR / name
    local.mkdir(parents=True, exist_ok=True)
    source = f"{settings.destination}:{run}" if run.startswith("/") else remote_path(settings, run)
    try:
        _rsync(settings, source.rstrip("/") + "/", str(local) + "/", f"pulling {run}")
    except RemoteError:
        _rmdir_if_empty(local)  # a run name that does not exist there leaves nothing behind here
        raise
    return local


def _rmdir_if_empty(path: Path) -> None:
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()


def _pull_metrics(settings: RemoteSettings) -> Path | None:
    local = settings.local_dir / METRICS_DIR
    exists = _ssh(settings, remote_script(settings, f"[ -d {METRICS_DIR} ] && echo yes || true"), "looking for metrics")
    if exists.strip() != "yes":
        return None
    local.mkdir(parents=True, exist_ok=True)
    # No --delete: metrics of runs evaluated here, or pulled from another server, stay.
    _rsync(settings, remote_path(settings, METRICS_DIR) + "/", str(local) + "/", "pulling metrics")
    return local


def _update_local_latest(run_dir: Path) -> bool:
    """Point local `latest` at a finished run unless a newer run (by its timestamp name) is latest."""
    from loraops.runs import LATEST, read_json, update_latest

    manifest = run_dir / "manifest.json"
    if not manifest.is_file() or read_json(manifest).get("status") != "finished":
        return False  # failed or interrupted runs never become latest, here as there
    link = run_dir.parent / LATEST
    current = os.readlink(link) if link.is_symlink() else ""
    if Path(current).name > run_dir.name:
        return False
    update_latest(run_dir.parent, run_dir)
    return True
