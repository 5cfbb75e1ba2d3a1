"""The public actions: push, init, train, evaluate, logs, pull.

Where runs and metrics live comes from the composed configs (train's `output_dir`, eval's
`metrics_dir`), on the server and here alike; where a job's run folder is, the job's `run` file says.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from loraops.paths import LATEST, LATEST_RUN, METRICS_DIR, RUNS_DIR
from loraops.remote.commands import (
    JOBS_DIR,
    PUSH_MARKER,
    init_command,
    loraops_command,
    push_check_command,
    push_options,
    remote_path,
    remote_script,
)
from loraops.remote.jobs import (
    _rsync,
    _run_checked,
    _ssh,
    checked_job,
    job_run,
    job_status,
    latest_job,
    pull_job,
    start_job,
    wait_job,
)
from loraops.remote.pushed import marker_text, project_files, sent_before
from loraops.remote.settings import RemoteError, RemoteSettings
from loraops.runs import RunDir
from loraops.tracking.importer import import_pulled

_RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass
class JobResult:
    exit_code: int
    job: str
    run_dir: Path | None = None  # the pulled run folder, when the job made or used one
    log: Path | None = None  # the pulled job log


@dataclass
class PullResult:
    run_dir: Path | None
    latest_updated: bool
    metrics_dir: Path | None


def push(settings: RemoteSettings) -> int:
    """Sync the project to REMOTE_DIR (no .env files, nothing git ignores, no local state); 0, or raises.

    A file removed here (a data file!) must not linger there, so the push deletes what an earlier push sent
    and the project no longer has; it only ever goes to a folder that an earlier push marked, or an empty one.
    """
    _check_push_target(settings)
    files = project_files(settings.local_dir, settings.push_gitignored)
    if files is None:
        print(
            f"{settings.local_dir} is not a git repository: what to push is decided by rsync's reading of the "
            ".gitignore files, which differs from git's in corner cases (trailing spaces, .git/info/exclude)",
            file=sys.stderr,
        )
        _rsync(
            settings,
            f"{settings.local_dir}/",
            remote_path(settings) + "/",
            "pushing the project",
            push_options(settings),
        )
    else:
        _push_files(settings, files)
    print(f"pushed {settings.local_dir} to {remote_path(settings)}")
    return 0


def _push_files(settings: RemoteSettings, files: list[str]) -> None:
    """Send exactly `files`, delete what the last push sent that is gone here, then record what was sent."""
    marker = _ssh(settings, remote_script(settings, f"cat {PUSH_MARKER} 2>/dev/null || true"), "reading the marker")
    gone = sorted(set(sent_before(marker)) - set(files))
    with tempfile.TemporaryDirectory(prefix="loraops-push-") as tmp:
        listing, record = Path(tmp) / "files", Path(tmp) / PUSH_MARKER
        listing.write_bytes("\0".join([*files, *gone]).encode("utf-8", "surrogateescape"))
        options = [f"--files-from={listing}", "--from0", "--delete-missing-args"]
        _rsync(settings, f"{settings.local_dir}/", remote_path(settings) + "/", "pushing the project", options)
        record.write_text(marker_text(files), encoding="utf-8")
        _rsync(settings, str(record), remote_path(settings, PUSH_MARKER), "recording what was pushed")


def _check_push_target(settings: RemoteSettings) -> None:
    where = f"{settings.destination}:{settings.remote_dir}"
    answer = _run_checked(settings, push_check_command(settings), "checking REMOTE_DIR").strip()
    if answer in ("new", "ours"):
        return
    if answer == "foreign":
        raise RemoteError(
            f"{where} already holds files that no loraops push put there, and a push deletes what the project "
            f"does not have. Choose a new or empty folder (REMOTE_DIR=...), or, if it is a copy of this project "
            f"pushed by an older loraops, mark it as one: ssh {settings.destination} touch "
            f"{shlex.quote(settings.remote_dir + '/' + PUSH_MARKER)}"
        )
    if answer == "home":
        raise RemoteError(
            f"{where} is the home folder (or /) on the server; a push needs a folder of its own, "
            "e.g. REMOTE_DIR=loraops"
        )
    if answer == "notdir":
        raise RemoteError(f"{where} is a file, not a folder; choose another REMOTE_DIR")
    raise RemoteError(f"checking {where} failed: unexpected answer {answer!r}")


def init(settings: RemoteSettings, detach: bool = False) -> JobResult:
    """Create the remote .venv and install everything, default model included (`make install` there)."""
    return _job(settings, "init", init_command(settings), detach)


def train(
    settings: RemoteSettings,
    config_name: str = "train",
    overrides: Sequence[str] = (),
    detach: bool = False,
    runs_dir: str = RUNS_DIR,
) -> JobResult:
    """`loraops train` on the server; when it ends, pull its run folder (and log) home.

    `runs_dir` is the composed train config's output_dir: the only folder a run may come home to."""
    return _job(settings, "train", loraops_command("train", config_name, overrides), detach, runs_dir)


def evaluate(
    settings: RemoteSettings,
    config_name: str = "eval",
    overrides: Sequence[str] = (),
    detach: bool = False,
    metrics_dir: str | None = None,
    model: str = LATEST_RUN,
) -> JobResult:
    """`loraops eval` (or, with config_name="eval_baseline", the base model) there; pull the run and metrics.

    `metrics_dir` is the composed eval config's metrics_dir, the same folder on both sides; `model` its
    `model`, whose runs folder is the only one the evaluated run may come home to.
    """
    command = loraops_command("eval", config_name, overrides)
    return _job(settings, "eval", command, detach, runs_dir_of(model), metrics_dir or METRICS_DIR)


def runs_dir_of(model: str) -> str:
    """The runs folder of an eval's `model`: a run, `latest` or a run name, or a run's model/ folder."""
    path = PurePosixPath(model)
    if len(path.parts) == 1:
        return RUNS_DIR
    return str(path.parent.parent if path.name == "model" else path.parent)


def logs(settings: RemoteSettings, job: str | None = None, follow: bool = True) -> int:
    """Print a job's log (the last job by default), following it to the end; its exit code (0 if running)."""
    job = job or latest_job(settings)
    if follow:
        return wait_job(settings, job)
    code = job_status(settings, job)  # first: it names a job that does not exist
    jdir = shlex.quote(f"{JOBS_DIR}/{job}")
    sys.stdout.write(_ssh(settings, remote_script(settings, f"cat {jdir}/job.log"), "reading the job log"))
    return code or 0


def pull(
    settings: RemoteSettings,
    run: str | None = None,
    runs_dir: str | None = None,
    metrics_dir: str | None = None,
    job: str | None = None,
) -> PullResult:
    """Bring a run and the metrics folder home and fix the local `latest`.

    The run is `job`'s run, else the run named `run` in `runs_dir`, else the remote `latest` there;
    `runs_dir` and `metrics_dir` default to the train and eval configs' defaults.
    """
    runs_dir = runs_dir or RUNS_DIR
    job = checked_job(job) if job else None
    where = job_run(settings, job) if job else _run_path(settings, run, runs_dir)
    if job and not where:
        print(f"job {job} made no run folder", file=sys.stderr)
    run_dir = _pull_run(settings, where, runs_dir) if where else None
    if run_dir and job:
        _attach_job_log(pull_job(settings, job), run_dir)
    if run_dir:
        import_pulled(RunDir(run_dir))
    updated = bool(run_dir) and _update_local_latest(run_dir)  # type: ignore[arg-type]
    metrics = _pull_metrics(settings, metrics_dir or METRICS_DIR)
    if run_dir:
        print(f"run: {run_dir}" + (" (now latest)" if updated else ""))
    return PullResult(run_dir, updated, metrics)


def _run_path(settings: RemoteSettings, run: str | None, runs_dir: str) -> str | None:
    """`runs_dir/<run>` on the server, or what its `latest` points at; run names only, never paths."""
    if run is not None:
        if not _RUN_NAME.fullmatch(run):
            raise RemoteError(f"--run {run!r}: give a run name such as 2026-11-25_08-15-12, not a path")
        return f"{runs_dir}/{run}"
    link = shlex.quote(f"{runs_dir}/{LATEST}")
    out = _ssh(settings, remote_script(settings, f"readlink {link} || true"), "finding the latest run").strip()
    if not out:
        print(f"no finished run on the server ({settings.remote_dir}/{runs_dir}/{LATEST} is missing)", file=sys.stderr)
        return None
    return f"{runs_dir}/{PurePosixPath(out).name}"  # checked as a run name by _local_run_path


def _job(
    settings: RemoteSettings,
    action: str,
    command: list[str],
    detach: bool,
    runs_dir: str = RUNS_DIR,
    metrics_dir: str | None = None,
) -> JobResult:
    job = start_job(settings, action, command)
    if detach:
        print(f"detached: `loraops remote logs --job {job}` follows it")
        return JobResult(0, job)
    try:
        code = wait_job(settings, job)
    except KeyboardInterrupt:
        print(
            f"\nstopped waiting; job {job} keeps running on the server: `loraops remote logs` follows it",
            file=sys.stderr,
        )
        raise
    log = pull_job(settings, job)
    run_dir = None
    where = job_run(settings, job) if action != "init" else None
    if where:
        run_dir = _pull_run(settings, where, runs_dir)
        _attach_job_log(log, run_dir)
        import_pulled(RunDir(run_dir))
        _update_local_latest(run_dir)
    if metrics_dir:
        _pull_metrics(settings, metrics_dir)
    print(f"remote job {job} exited with status {code}; log: {log}", file=sys.stderr if code else sys.stdout)
    return JobResult(code, job, run_dir, log)


def _local_run_path(settings: RemoteSettings, run: str, runs_dir: str) -> Path:
    """Where a remote run lands here: <runs_dir>/<run name> in the project (outputs/runs/ when runs_dir is an
    absolute folder of the server), and nowhere else. The server names the run (its job's run file, its
    `latest` link), so what it says is only accepted as one run name inside the expected runs folder."""
    path, expected = PurePosixPath(run), PurePosixPath(runs_dir)
    if not _RUN_NAME.fullmatch(path.name) or path.parent != expected or ".." in expected.parts:
        raise RemoteError(
            f"the server named the run folder {run!r}; a pulled run must be a run folder in {runs_dir}/ "
            "(the train config's output_dir), so nothing is pulled"
        )
    return settings.local_dir / (RUNS_DIR if expected.is_absolute() else runs_dir) / path.name


def _pull_run(settings: RemoteSettings, run: str, runs_dir: str) -> Path:
    """rsync one run folder; `run` is relative to REMOTE_DIR, or absolute. Links pointing out of it are not
    brought home (--safe-links)."""
    local = _local_run_path(settings, run, runs_dir)
    local.mkdir(parents=True, exist_ok=True)
    source = f"{settings.destination}:{run}" if run.startswith("/") else remote_path(settings, run)
    try:
        _rsync(settings, source.rstrip("/") + "/", str(local) + "/", f"pulling {run}", ["--safe-links"])
    except RemoteError:
        _rmdir_if_empty(local)  # a run name that does not exist there leaves nothing behind here
        raise
    return local


def _attach_job_log(log: Path, run_dir: Path) -> None:
    """Keep the remote job's whole log with the run it made."""
    shutil.copyfile(log, RunDir(run_dir).remote_log)


def _rmdir_if_empty(path: Path) -> None:
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()


def _pull_metrics(settings: RemoteSettings, metrics_dir: str) -> Path | None:
    local = settings.local_dir / metrics_dir
    probe = f"[ -d {shlex.quote(metrics_dir)} ] && echo yes || true"
    if _ssh(settings, remote_script(settings, probe), "looking for metrics").strip() != "yes":
        return None
    local.mkdir(parents=True, exist_ok=True)
    source = (
        f"{settings.destination}:{metrics_dir}" if metrics_dir.startswith("/") else remote_path(settings, metrics_dir)
    )
    # No --delete: metrics of runs evaluated here, or pulled from another server, stay.
    _rsync(settings, source.rstrip("/") + "/", str(local) + "/", "pulling metrics", ["--safe-links"])
    return local


def _update_local_latest(run_dir: Path) -> bool:
    """Point local `latest` at a finished run unless a newer run (by its timestamp name) is latest."""
    run = RunDir(run_dir)
    if not run.is_finished():
        return False  # failed or interrupted runs never become latest, here as there
    link = run_dir.parent / LATEST
    current = link.readlink().name if link.is_symlink() else ""
    if current > run.name:
        return False
    run.mark_latest()
    return True
