"""Remote training over SSH: push the project, install, train and evaluate on a server, pull the results.

Every remote step runs the project's own front end in the pushed copy (`make install`,
`.venv/bin/loraops train|eval ...`), so a remote run behaves exactly like a local one. Long steps
run detached under nohup with their log, pid, exit code and run-folder path in `outputs/remote/<job>/`
on the server, so a dropped connection never kills them; the local side only follows the log and waits.

Safety rules kept here, and tested:
- every value that reaches a remote shell goes through shlex.quote (or is passed as a positional
  argument to a fixed script), so a path with spaces or `$(...)` is data, never code;
- only CUDA_VISIBLE_DEVICES, HF_HOME and (when it names a tracking server, without credentials)
  MLFLOW_TRACKING_URI are forwarded; tokens and keys (HF_TOKEN, LAKEFS_*) never reach a remote
  command line or a log, and a final check refuses any command that contains one.
- runs pulled home with MLflow tracking get their MLflow run here (loraops.tracking.importer).
"""

from loraops.remote.actions import JobResult, PullResult, evaluate, init, logs, pull, push, train
from loraops.remote.commands import (
    INIT_SCRIPT,
    JOB_RUN_FILE,
    JOB_WRAPPER,
    JOBS_DIR,
    PUSH_EXCLUDES,
    PUSH_MARKER,
    check_no_secrets,
    env_prefix,
    init_command,
    job_start_script,
    loraops_command,
    push_options,
    remote_path,
    remote_script,
    rsync_argv,
    ssh_argv,
    ssh_base,
)
from loraops.remote.jobs import job_status, start_job, wait_job
from loraops.remote.settings import (
    FORWARDED_ENV,
    ConnectionFailed,
    RemoteError,
    RemoteSettings,
    load_settings,
    read_dotenv,
)

__all__ = [
    "INIT_SCRIPT",
    "JOB_RUN_FILE",
    "JOB_WRAPPER",
    "JOBS_DIR",
    "FORWARDED_ENV",
    "PUSH_EXCLUDES",
    "PUSH_MARKER",
    "ConnectionFailed",
    "JobResult",
    "PullResult",
    "RemoteError",
    "RemoteSettings",
    "check_no_secrets",
    "env_prefix",
    "evaluate",
    "init",
    "init_command",
    "job_start_script",
    "job_status",
    "load_settings",
    "logs",
    "loraops_command",
    "pull",
    "push",
    "push_options",
    "read_dotenv",
    "remote_path",
    "remote_script",
    "rsync_argv",
    "ssh_argv",
    "ssh_base",
    "start_job",
    "train",
    "wait_job",
]
