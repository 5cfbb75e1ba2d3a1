"""Command lines and scripts for the server: every value quoted, no secret ever included."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from loraops.paths import JOBS_DIR
from loraops.remote.settings import RemoteError, RemoteSettings
from loraops.runs import RUN_FILE_ENV
from loraops.secrets import leaked_secret

JOB_RUN_FILE = "run"  # in the job folder: the path of the run folder the job's command created or used
# Written by the first push into REMOTE_DIR: a push deletes files there, so only a folder that
# carries it (or an empty one) is ever pushed to. Excluded below, so --delete never removes it.
PUSH_MARKER = ".loraops-push"
# Never synced: secrets (.env, .env.local, data/.env, ... at any depth), local state, caches, and what
# `make install` rebuilds on the server. Excluded paths on the server are also safe from --delete.
PUSH_EXCLUDES = (
    ".env*",
    f"/{PUSH_MARKER}",
    "/.venv/",
    "/outputs/",
    "/artifacts/",
    "/models/",
    "/mlruns/",
    "/build/",
    "/dist/",
    "__pycache__/",
    "*.pyc",
    "*.egg-info/",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    "/.git/",
)
# Every .gitignore's patterns, in every folder, excluded too (rsync reads them as it goes).
GITIGNORE_FILTER = "--filter=:- .gitignore"

# Prints where the push would go: `new` (empty or missing folder, now marked), `ours` (marked by an
# earlier push), `foreign` (holds files no push put there), `home` (the home folder or /), `notdir`.
PUSH_CHECK_SCRIPT = r"""d=$1
if [ -e "$d" ] && [ ! -d "$d" ]; then echo notdir; exit 0; fi
mkdir -p -- "$d" && cd -- "$d" || exit 1
here=$(pwd -P)
if [ "$here" = / ] || [ "$here" = "$(cd && pwd -P)" ]; then echo home; exit 0; fi
if [ -f {marker} ]; then echo ours; exit 0; fi
if [ -n "$(ls -A)" ]; then echo foreign; exit 0; fi
echo "A copy of a loraops project, kept in sync by 'loraops remote push', which deletes files here that \
the project does not have." >{marker}
echo new
""".format(marker=PUSH_MARKER)

# Runs on the server as `sh -c JOB_WRAPPER sh <job dir> <command...>`: the command arrives as
# positional arguments, never re-parsed by a shell. loraops writes the path of its run folder to
# the file RUN_FILE_ENV names (the job's `run` file). The exit code file is written last, by
# rename, so its presence means "finished".
JOB_WRAPPER = r"""job=$1; shift
export {env}="$PWD/$job/{run_file}"
"$@" >>"$job/job.log" 2>&1
code=$?
echo "$code" >"$job/exit_code.tmp" && mv "$job/exit_code.tmp" "$job/exit_code"
""".format(env=RUN_FILE_ENV, run_file=JOB_RUN_FILE)

# `make install` on the server, after optionally creating .venv so that it sees the packages of an
# existing Python environment there (a preinstalled CUDA torch, or the tests' venv): pip then
# installs only what is missing. $1: python for the venv, $2: python whose packages to reuse, or "".
INIT_SCRIPT = r"""set -e
if [ -n "$2" ] && [ ! -x .venv/bin/python ]; then
  "$1" -m venv .venv
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$2" -c 'import site; print("\n".join(site.getsitepackages()))' >"$site/_loraops_shared_packages.pth"
fi
make install PYTHON="$1"
exec .venv/bin/loraops devices
"""


def ssh_base(settings: RemoteSettings) -> list[str]:
    """ssh and its options, without destination: shared by ssh calls and rsync's -e."""
    argv = [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=15",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=4",
    ]
    if settings.port:
        argv += ["-p", str(settings.port)]
    if settings.ssh_key:
        argv += ["-i", str(Path(settings.ssh_key).expanduser()), "-o", "IdentitiesOnly=yes"]
    return argv + settings.ssh_args


def remote_script(settings: RemoteSettings, *lines: str) -> str:
    """A POSIX sh script that stops at the first failure and runs inside REMOTE_DIR."""
    return "\n".join(["set -e", f"cd -- {shlex.quote(settings.remote_dir)}", *lines])


def ssh_argv(settings: RemoteSettings, script: str) -> list[str]:
    # `sh -c` makes the script independent of the user's login shell (bash, zsh, fish...).
    argv = [*ssh_base(settings), settings.destination, shlex.join(["sh", "-c", script])]
    check_no_secrets(argv)
    return argv


def push_options(settings: RemoteSettings) -> list[str]:
    """rsync options of a push: delete what the project no longer has, never sync what must stay here."""
    options = ["--delete", *(f"--exclude={pattern}" for pattern in PUSH_EXCLUDES)]
    return options if settings.push_gitignored else [*options, GITIGNORE_FILTER]


def push_check_command(settings: RemoteSettings) -> list[str]:
    argv = [
        *ssh_base(settings),
        settings.destination,
        shlex.join(["sh", "-c", PUSH_CHECK_SCRIPT, "sh", settings.remote_dir]),
    ]
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
    return remote_script(
        settings,
        f"mkdir -p {jdir}",
        f": >{jdir}/job.log",
        f"ln -sfn {shlex.quote(job)} {JOBS_DIR}/latest",
        f"{full} </dev/null >/dev/null 2>&1 &",
        f"echo $! >{jdir}/pid",
    )


def loraops_command(action: str, config_name: str, overrides: Sequence[str]) -> list[str]:
    return [".venv/bin/loraops", action, "--config-name", config_name, *overrides]


def init_command(settings: RemoteSettings) -> list[str]:
    return ["sh", "-c", INIT_SCRIPT, "sh", settings.python, settings.packages_from or ""]


def check_no_secrets(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> None:
    """Refuse a command line that carries the value of a secret-looking environment variable."""
    name = leaked_secret("\n".join(argv), os.environ if environ is None else environ)
    if name:
        raise RemoteError(f"refusing to send the value of {name} to the server")
