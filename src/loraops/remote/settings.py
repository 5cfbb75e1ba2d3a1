"""Remote settings: the environment, then .env, then the config's typed `remote:` section."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from loraops.config import RemoteConfig
from loraops.errors import LoraopsError

FORWARDED_ENV = ("CUDA_VISIBLE_DEVICES", "HF_HOME")
# Settings keys: environment / .env name -> `remote:` config key.
_KEYS = {
    "REMOTE_HOST": "host",
    "REMOTE_USER": "user",
    "REMOTE_DIR": "dir",
    "REMOTE_PORT": "port",
    "REMOTE_SSH_KEY": "ssh_key",
    "REMOTE_SSH_OPTS": "ssh_options",
    "REMOTE_PYTHON": "python",
    "REMOTE_PACKAGES_FROM": "packages_from",
    "REMOTE_PUSH_GITIGNORED": "push_gitignored",
    "CUDA_VISIBLE_DEVICES": "cuda_visible_devices",
    "HF_HOME": "hf_home",
}


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
    push_gitignored: bool = False  # push what .gitignore ignores too (.env files never)
    local_dir: Path = field(default_factory=Path.cwd)  # the project pushed, and where results land

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def remote_dir(self) -> str:
        # rsync's protected args and `cd --` do not expand `~`; the ssh login starts in home anyway.
        d = self.dir.strip()
        return "." if d in ("~", "~/") else d[2:] if d.startswith("~/") else d


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file; values stay in this dict, never in os.environ."""
    return {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}


def load_settings(
    local_dir: Path | None = None,
    config: RemoteConfig | Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RemoteSettings:
    """Settings from the environment, then `<local_dir>/.env`, then the config's `remote:` section."""
    local_dir = Path(local_dir or Path.cwd()).resolve()
    sources = [dict(os.environ if environ is None else environ), read_dotenv(local_dir / ".env")]
    section = asdict(config) if is_dataclass(config) else dict(config or {})  # type: ignore[arg-type]

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
    forward += _tracking_server(sources)
    settings = RemoteSettings(
        host=str(host),
        dir=str(get("REMOTE_DIR") or "loraops"),
        user=_str_or_none(get("REMOTE_USER")),
        port=_port(get("REMOTE_PORT")),
        ssh_key=_str_or_none(get("REMOTE_SSH_KEY")),
        ssh_options=tuple(shlex.split(opts) if isinstance(opts, str) else map(str, opts)),
        python=str(get("REMOTE_PYTHON") or "python3"),
        packages_from=_str_or_none(get("REMOTE_PACKAGES_FROM")),
        forward_env=forward,
        local_dir=local_dir,
        push_gitignored=_flag(get("REMOTE_PUSH_GITIGNORED")),
    )
    validate(settings)
    return settings


def _tracking_server(sources: list[dict[str, str]]) -> tuple[tuple[str, str], ...]:
    """MLFLOW_TRACKING_URI, when it names a server the job can log to itself (see loraops.tracking.importer)."""
    from loraops.tracking.store import forwardable_uri

    uri = forwardable_uri(next((s["MLFLOW_TRACKING_URI"] for s in sources if s.get("MLFLOW_TRACKING_URI")), None))
    return (("MLFLOW_TRACKING_URI", uri),) if uri else ()


def _str_or_none(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


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
    if settings.remote_dir.rstrip("/") in ("", "."):
        raise RemoteError(
            f"REMOTE_DIR={settings.dir!r} is the remote home folder (or /) itself: a push deletes "
            "what the project does not have, so it needs a folder of its own, e.g. REMOTE_DIR=loraops"
        )
