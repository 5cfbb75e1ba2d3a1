"""Running ssh and rsync, and detached jobs on the server: start, status, follow, wait."""

from __future__ import annotations

import codecs
import re
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from loraops.remote.commands import (
    JOB_RUN_FILE,
    JOBS_DIR,
    job_start_script,
    remote_path,
    remote_script,
    rsync_argv,
    ssh_argv,
)
from loraops.remote.settings import ConnectionFailed, RemoteError, RemoteSettings

_SSH_FAILED = 255  # ssh's own exit status for connection and authentication errors
_JOB_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_RECONNECTS = 5


def _run(argv: list[str], what: str, capture: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ssh/rsync; a connection failure becomes a RemoteError naming what was being done."""
    try:
        done = subprocess.run(argv, text=True, capture_output=capture, stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise RemoteError(f"{argv[0]} is not installed here; {what} needs it") from exc
    # 255: ssh could not connect or log in; rsync reports the same as 255, or 12 (stream broken).
    if done.returncode == _SSH_FAILED or (argv[0] == "rsync" and done.returncode == 12):
        detail = (done.stderr or "").strip().splitlines()[-1:] if capture else []
        reason = detail[0] if detail else f"{argv[0]} exit status {done.returncode}"
        raise ConnectionFailed(f"cannot reach the server ({what}): {reason}")
    return done


def _rsync(settings: RemoteSettings, source: str, dest: str, what: str, extra: Sequence[str] = ()) -> None:
    # Not captured: rsync's own errors (a missing path, a full disk) go straight to the user.
    done = _run(rsync_argv(settings, source, dest, extra), what, capture=False)
    if done.returncode != 0:
        raise RemoteError(f"{what} failed (rsync exit status {done.returncode})")


def _ssh(settings: RemoteSettings, script: str, what: str) -> str:
    return _run_checked(settings, ssh_argv(settings, script), what)


def _run_checked(settings: RemoteSettings, argv: list[str], what: str) -> str:
    """stdout of an ssh command line; a non-zero exit status is a RemoteError naming `what`."""
    done = _run(argv, what)
    if done.returncode != 0:
        raise RemoteError(f"{what} failed on {settings.destination}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def new_job_id(action: str) -> str:
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{action}_{secrets.token_hex(3)}"


def start_job(settings: RemoteSettings, action: str, command: Sequence[str]) -> str:
    """Start a detached job in REMOTE_DIR and return its id (`outputs/remote/<id>/` there)."""
    job = new_job_id(action)
    _ssh(settings, job_start_script(settings, job, command), f"starting {action}")
    print(f"remote job {job} started on {settings.destination}; its log: {JOBS_DIR}/{job}/job.log", flush=True)
    return job


def job_status(settings: RemoteSettings, job: str) -> int | None:
    """The job's exit code, or None while it runs; a job that died without one counts as failed (1)."""
    jdir = shlex.quote(f"{JOBS_DIR}/{job}")
    out = _ssh(
        settings,
        remote_script(
            settings,
            f"if [ ! -d {jdir} ]; then echo missing; "
            f"elif [ -f {jdir}/exit_code ]; then cat {jdir}/exit_code; "
            f'elif kill -0 "$(cat {jdir}/pid)" 2>/dev/null; then echo running; '
            "else echo died; fi",
        ),
        "reading the job status",
    ).strip()
    if out == "running":
        return None
    if out == "missing":
        raise RemoteError(f"no job {job} in {settings.remote_dir}/{JOBS_DIR} on {settings.destination}")
    return int(out) if out.lstrip("-").isdigit() else 1


def _follow(settings: RemoteSettings, job: str, offset: int) -> tuple[int, int]:
    """Stream the job log from byte `offset` until the job exits; returns (ssh status, new offset)."""
    jdir = shlex.quote(f"{JOBS_DIR}/{job}")
    script = remote_script(settings, f'exec tail -c +{offset + 1} -f --pid="$(cat {jdir}/pid)" {jdir}/job.log')
    proc = subprocess.Popen(ssh_argv(settings, script), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    assert proc.stdout is not None
    while chunk := proc.stdout.read1(65536):  # type: ignore[attr-defined]
        offset += len(chunk)
        sys.stdout.write(decoder.decode(chunk))
        sys.stdout.flush()
    return proc.wait(), offset


def wait_job(settings: RemoteSettings, job: str, follow: bool = True) -> int:
    """Follow the log until the job ends and return its exit code; reconnects after a dropped link."""
    offset, failures = 0, 0
    while True:
        if follow:
            rc, offset = _follow(settings, job, offset)
            failures = failures + 1 if rc == _SSH_FAILED else 0
        try:
            code = job_status(settings, job)
        except ConnectionFailed:
            code, failures = None, failures + 1
        if code is not None:
            return code
        if failures > _RECONNECTS:
            raise RemoteError(
                f"lost the connection to {settings.destination}; job {job} keeps running there: "
                "`loraops remote logs` follows it, `loraops remote pull` fetches its run"
            )
        time.sleep(min(2**failures, 30) if failures else 2)


def job_run(settings: RemoteSettings, job: str) -> str | None:
    """The run folder the job's command created or used (relative to REMOTE_DIR, or absolute); None if none."""
    run_file = shlex.quote(f"{JOBS_DIR}/{job}/{JOB_RUN_FILE}")
    out = _ssh(settings, remote_script(settings, f"cat {run_file} 2>/dev/null || true"), "reading the job's run")
    return out.strip() or None


def latest_job(settings: RemoteSettings) -> str:
    out = _ssh(settings, remote_script(settings, f"readlink {JOBS_DIR}/latest || true"), "finding the last job")
    if not out.strip():
        raise RemoteError(f"no remote jobs in {settings.remote_dir}/{JOBS_DIR} on {settings.destination}")
    return checked_job(out.strip(), "the server's latest job")


def checked_job(job: str, said_by: str = "--job") -> str:
    """A job id names one folder in outputs/remote/, on both sides: never a path."""
    if not _JOB_ID.fullmatch(job):
        raise RemoteError(f"{said_by} {job!r} is not a job id (such as 2026-11-25_08-15-12_train_a1b2c3)")
    return job


def pull_job(settings: RemoteSettings, job: str) -> Path:
    """Bring `outputs/remote/<job>/` (log, exit code) home; returns the local log path."""
    local = settings.local_dir / JOBS_DIR / checked_job(job)
    local.mkdir(parents=True, exist_ok=True)
    source = remote_path(settings, JOBS_DIR, job) + "/"
    _rsync(settings, source, str(local) + "/", "pulling the job log", ["--safe-links"])
    return local / "job.log"
