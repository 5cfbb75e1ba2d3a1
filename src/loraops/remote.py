"""Remote training over SSH: push the project, install, train and evaluate on a server, pull the results.

Every remote step runs the project's own front end in the pushed copy (`make install`,
`.venv/bin/loraops train|eval ...`), so a remote run behaves exactly like a local one. Long steps
run detached under nohup with their log, pid and exit code in `outputs/remote/<job>/` on the server,
so a dropped connection never kills them; the local side only follows the log and waits.

Safety rules kept here, and tested:
- every value that reaches a remote shell goes through shlex.quote (or is passed as a positional
  argument to a fixed script), so a path with spaces or `$(...)` is data, never code;
- only CUDA_VISIBLE_DEVICES and HF_HOME are forwarded; tokens and keys (HF_TOKEN, LAKEFS_*) never
  reach a remote command line or a log, and a final check refuses any command that contains one.
"""

from __future__ import annotations

import codecs
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from loraops.errors import LoraopsError

JOBS_DIR = "outputs/remote"  # on both sides: one folder per remote job (log, pid, exit code, run)
RUNS_DIR = "outputs/runs"
METRICS_DIR = "artifacts/metrics"
FORWARDED_ENV = ("CUDA_VISIBLE_DEVICES", "HF_HOME")
# Never synced: local state, caches, secrets, and what `make install` rebuilds on the server.
PUSH_EXCLUDES = ("/.venv/", "/outputs/", "/artifacts/", "/models/", "/.env", "/build/", "/dist/",
                 "__pycache__/", "*.pyc", "*.egg-info/", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/")  # fmt: skip
# HF_TOKEN, LAKEFS_ACCESS_KEY_ID, LAKEFS_SECRET_ACCESS_KEY, and their kin.
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|ACCESS_KEY|API_KEY|CREDENTIAL)", re.I)
_SSH_FAILED = 255  # ssh's own exit status for connection and authentication errors
_RECONNECTS = 5

# Settings keys: environment / .env name -> `remote:` config key.
_KEYS = {"REMOTE_HOST": "host", "REMOTE_USER": "user", "REMOTE_DIR": "dir", "REMOTE_PORT": "port",
         "REMOTE_SSH_KEY": "ssh_key", "REMOTE_SSH_OPTS": "ssh_options", "REMOTE_PYTHON": "python",
         "REMOTE_PACKAGES_FROM": "packages_from",
         "CUDA_VISIBLE_DEVICES": "cuda_visible_devices", "HF_HOME": "hf_home"}  # fmt: skip

# Runs on the server as `sh -c JOB_WRAPPER sh <job dir> <command...>`: the command arrives as
# positional arguments, never re-parsed by a shell. The exit code file is written last, by rename,
# so its presence means "finished"; the log is copied into the run folder the command created.
JOB_WRAPPER = r"""job=$1; shift
"$@" >>"$job/job.log" 2>&1
code=$?
run=$(sed -n "s/^.* loraops: run folder: //p" "$job/job.log" | tail -n 1)
if [ -n "$run" ] && [ -d "$run" ]; then cp "$job/job.log" "$run/remote.log"; printf "%s\n" "$run" >"$job/run"; fi
echo "$code" >"$job/exit_code.tmp" && mv "$job/exit_code.tmp" "$job/exit_code"
"""

# `make install` on the server, after optionally creating .venv so that it sees the packages of an
# existing Python environment there (a preinstalled CUDA torch, or the tests' venv): pip then
# installs only what is missing. $1: python for the venv, $2: python whose packages to reuse, or "".
INIT_SCRIPT = r"""set -e
if [ -n "$2" ] && [ ! -x .venv/bin/python ]; then
  "$1" -m venv .venv
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$2" -c 'import site; print("\n".join(site.getsitepackages()))' >"$site/_loraops_shared_packages.pth"
fi
exec make install PYTHON="$1"
"""


class RemoteError(LoraopsError):
    """The server cannot be reached, or a remote step could not be started or read."""


class ConnectionFailed(RemoteError):
    """ssh could not connect or lost the connection (ssh exit status 255)."""


@dataclass(frozen=True)
class RemoteSettings:
    host: str
    dir: str = "loraops"  # relative paths are relative to the remote user's home
    user: str | None = None
    port: int | None = None
    ssh_key: str | None = None
    ssh_options: tuple[str, ...] = ()
    python: str = "python3"  # the server's python that creates .venv
    packages_from: str | None = None  # a server python whose packages .venv may reuse
    forward_env: tuple[tuple[str, str], ...] = ()
    local_dir: Path = field(default_factory=Path.cwd)  # the project pushed, and where results land

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def remote_dir(self) -> str:
        # rsync's protected args and `cd --` do not expand `~`; the ssh login starts in home anyway.
        d = self.dir.strip()
        return "." if d in ("~", "~/") else d[2:] if d.startswith("~/") else d


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


# --- settings -------------------------------------------------------------------------------------


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file; values stay in this dict, never in os.environ."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def config_remote_section(config_dir: Path, config_name: str, fallback: str | None = "train") -> dict[str, Any]:
    """The `remote:` mapping of configs/<name>.yaml, of a config in its `defaults`, else of train.yaml.

    One `remote:` section in train.yaml then serves `loraops remote eval` and `pull` too.
    """
    path = Path(config_dir) / f"{config_name}.yaml"
    data = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}
    section = data.get("remote")
    if section is None:
        parents = [d for d in data.get("defaults", []) if isinstance(d, str) and d != "_self_"]
        if fallback and fallback != config_name:
            parents.append(fallback)
        return next((s for s in (config_remote_section(config_dir, p, None) for p in parents) if s), {})
    if not isinstance(section, dict):
        raise RemoteError(f"{path}: `remote` must be a mapping")
    unknown = sorted(set(section) - set(_KEYS.values()))
    if unknown:
        raise RemoteError(f"{path}: unknown key(s) remote.{', remote.'.join(unknown)}; "
                          f"valid: {', '.join(_KEYS.values())}")  # fmt: skip
    return section


def load_settings(
    local_dir: Path | None = None,
    config: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RemoteSettings:
    """Settings from the environment, then `<local_dir>/.env`, then the config's `remote:` section."""
    local_dir = Path(local_dir or Path.cwd()).resolve()
    sources = [dict(os.environ if environ is None else environ), read_dotenv(local_dir / ".env")]
    section = dict(config or {})

    def get(name: str) -> Any:
        for source in sources:
            if source.get(name) not in (None, ""):
                return source[name]
        return section.get(_KEYS[name])

    host = get("REMOTE_HOST")
    if not host:
        raise RemoteError("no remote host: set REMOTE_HOST (environment or .env) or `remote.host` in the config")
    opts = get("REMOTE_SSH_OPTS") or ()
    forward = tuple((name, str(get(name))) for name in FORWARDED_ENV if get(name) not in (None, ""))
    settings = RemoteSettings(
        host=str(host), dir=str(get("REMOTE_DIR") or "loraops"), user=_str_or_none(get("REMOTE_USER")),
        port=_port(get("REMOTE_PORT")), ssh_key=_str_or_none(get("REMOTE_SSH_KEY")),
        ssh_options=tuple(shlex.split(opts) if isinstance(opts, str) else map(str, opts)),
        python=str(get("REMOTE_PYTHON") or "python3"), packages_from=_str_or_none(get("REMOTE_PACKAGES_FROM")),
        forward_env=forward, local_dir=local_dir,
    )  # fmt: skip
    validate(settings)
    return settings


def _str_or_none(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _port(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = 0
    if not 1 <= port <= 65535:
        raise RemoteError(f"REMOTE_PORT={value!r} must be a port number (1-65535)")
    return port


_HOST = re.compile(r"[A-Za-z0-9_.%:\[\]-]+")
_USER = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")


def validate(settings: RemoteSettings) -> None:
    """Reject values that ssh would read as options: `-oProxyCommand=...` as a host runs a local command."""
    if settings.host.startswith("-") or not _HOST.fullmatch(settings.host):
        raise RemoteError(f"REMOTE_HOST={settings.host!r} is not a host name or address")
    if settings.user is not None and not _USER.fullmatch(settings.user):
        raise RemoteError(f"REMOTE_USER={settings.user!r} is not a user name")
    if not settings.remote_dir:
        raise RemoteError("REMOTE_DIR is empty")


# --- command building -----------------------------------------------------------------------------


def ssh_base(settings: RemoteSettings) -> list[str]:
    """ssh and its options, without destination: shared by ssh calls and rsync's -e."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]  # fmt: skip
    if settings.port:
        argv += ["-p", str(settings.port)]
    if settings.ssh_key:
        argv += ["-i", str(Path(settings.ssh_key).expanduser()), "-o", "IdentitiesOnly=yes"]
    return argv + list(settings.ssh_options)


def remote_script(settings: RemoteSettings, *lines: str) -> str:
    """A POSIX sh script that stops at the first failure and runs inside REMOTE_DIR."""
    return "\n".join(["set -e", f"cd -- {shlex.quote(settings.remote_dir)}", *lines])


def ssh_argv(settings: RemoteSettings, script: str) -> list[str]:
    # `sh -c` makes the script independent of the user's login shell (bash, zsh, fish...).
    argv = [*ssh_base(settings), settings.destination, shlex.join(["sh", "-c", script])]
    check_no_secrets(argv)
    return argv


def rsync_argv(settings: RemoteSettings, source: str, dest: str, extra: Sequence[str] = ()) -> list[str]:
    # --protect-args sends paths inside the rsync protocol, so the remote shell never parses them.
    argv = ["rsync", "-az", "--protect-args", "-e", shlex.join(ssh_base(settings)), *extra, source, dest]
    check_no_secrets(argv)
    return argv


def remote_path(settings: RemoteSettings, *parts: str) -> str:
    """`user@host:dir/part/...` for rsync."""
    return f"{settings.destination}:{'/'.join([settings.remote_dir.rstrip('/') or '/', *parts])}"


def env_prefix(settings: RemoteSettings) -> list[str]:
    return ["env", *(f"{name}={value}" for name, value in settings.forward_env)] if settings.forward_env else []


def job_start_script(settings: RemoteSettings, job: str, command: Sequence[str]) -> str:
    """Start `command` detached on the server; returns at once, leaving the job's pid behind."""
    jdir = shlex.quote(f"{JOBS_DIR}/{job}")
    full = shlex.join(["nohup", "sh", "-c", JOB_WRAPPER, "sh", f"{JOBS_DIR}/{job}", *env_prefix(settings), *command])
    return remote_script(settings, f"mkdir -p {jdir}", f": >{jdir}/job.log",
                         f"ln -sfn {shlex.quote(job)} {JOBS_DIR}/latest",
                         f"{full} </dev/null >/dev/null 2>&1 &", f"echo $! >{jdir}/pid")  # fmt: skip


def loraops_command(action: str, config_name: str, overrides: Sequence[str]) -> list[str]:
    return [".venv/bin/loraops", action, "--config-name", config_name, *overrides]


def init_command(settings: RemoteSettings) -> list[str]:
    return ["sh", "-c", INIT_SCRIPT, "sh", settings.python, settings.packages_from or ""]


def check_no_secrets(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> None:
    """Refuse a command line that carries the value of a secret-looking environment variable."""
    text = "\n".join(argv)
    for name, value in (os.environ if environ is None else environ).items():
        if _SECRET_NAME.search(name) and len(value) >= 8 and value in text:
            raise RemoteError(f"refusing to send the value of {name} to the server")


# --- running --------------------------------------------------------------------------------------


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
    done = _run(ssh_argv(settings, script), what)
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
    out = _ssh(settings, remote_script(settings, f"if [ ! -d {jdir} ]; then echo missing; "
                                                 f"elif [ -f {jdir}/exit_code ]; then cat {jdir}/exit_code; "
                                                 f"elif kill -0 \"$(cat {jdir}/pid)\" 2>/dev/null; then echo running; "
                                                 "else echo died; fi"), "reading the job status").strip()  # fmt: skip
    if out == "running":
        return None
    if out == "missing":
        raise RemoteError(f"no job {job} in {settings.remote_dir}/{JOBS_DIR} on {settings.destination}")
    return int(out) if out.lstrip("-").isdigit() else 1


def _follow(settings: RemoteSettings, job: str, offset: int) -> tuple[int, int]:
    """Stream the job log from byte `offset` until the job exits; returns (ssh status, new offset)."""
    jdir = shlex.quote(f"{JOBS_DIR}/{job}")
    script = remote_script(settings, f"exec tail -c +{offset + 1} -f --pid=\"$(cat {jdir}/pid)\" {jdir}/job.log")
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
            raise RemoteError(f"lost the connection to {settings.destination}; job {job} keeps running there: "
                              "`loraops remote logs` follows it, `loraops remote pull` fetches its run")  # fmt: skip
        time.sleep(min(2**failures, 30) if failures else 2)


def job_run(settings: RemoteSettings, job: str) -> str | None:
    """The run folder (as the job printed it, relative to REMOTE_DIR) that a train job created."""
    jdir = shlex.quote(f"{JOBS_DIR}/{job}")
    out = _ssh(settings, remote_script(settings, f"cat {jdir}/run 2>/dev/null || true"), "reading the job's run")
    return out.strip() or None


def latest_job(settings: RemoteSettings) -> str:
    out = _ssh(settings, remote_script(settings, f"readlink {JOBS_DIR}/latest || true"), "finding the last job")
    if not out.strip():
        raise RemoteError(f"no remote jobs in {settings.remote_dir}/{JOBS_DIR} on {settings.destination}")
    return out.strip()


def pull_job(settings: RemoteSettings, job: str) -> Path:
    """Bring `outputs/remote/<job>/` (log, exit code) home; returns the local log path."""
    local = settings.local_dir / JOBS_DIR / job
    local.mkdir(parents=True, exist_ok=True)
    _rsync(settings, remote_path(settings, JOBS_DIR, job) + "/", str(local) + "/", "pulling the job log")
    return local / "job.log"


# --- public actions -------------------------------------------------------------------------------


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


# --- helpers of the actions -----------------------------------------------------------------------


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
