"""Remote settings: the config's `remote:` section overlaid by REMOTE_* variables, from the environment first,
then from .env (pydantic-settings reads both; the keys themselves are declared once, in config.RemoteConfig)."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, DotEnvSettingsSource, EnvSettingsSource, SettingsConfigDict

from loraops.config import RemoteConfig
from loraops.errors import LoraopsError

FORWARDED_ENV = ("CUDA_VISIBLE_DEVICES", "HF_HOME")
ENV_PREFIX = "REMOTE_"
_HOST = re.compile(r"[A-Za-z0-9_.%:\[\]-]+")
_USER = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")


class RemoteError(LoraopsError):
    """The server cannot be reached, or a remote step could not be started or read."""


class ConnectionFailed(RemoteError):
    """ssh could not connect or lost the connection (ssh exit status 255)."""


class RemoteSettings(RemoteConfig):
    """The settings in force, and what follows from them; values ssh would read as options are refused."""

    model_config = RemoteConfig.model_config | {"frozen": True}

    local_dir: Path = Field(default_factory=Path.cwd)  # the project pushed, and where results land
    forward_env: tuple[tuple[str, str], ...] = ()  # variables the remote job gets

    @field_validator("host")
    @classmethod
    def _host(cls, host: str | None) -> str:
        if not host:
            raise RemoteError("no remote host: set REMOTE_HOST (environment or .env) or `remote.host` in the config")
        if host.startswith("-") or not _HOST.fullmatch(host):  # `-oProxyCommand=...` as a host runs a command
            raise RemoteError(f"REMOTE_HOST={host!r} is not a host name or address")
        return host

    @field_validator("user")
    @classmethod
    def _user(cls, user: str | None) -> str | None:
        if user is not None and not _USER.fullmatch(user):
            raise RemoteError(f"REMOTE_USER={user!r} is not a user name")
        return user

    @field_validator("dir")
    @classmethod
    def _dir(cls, value: str) -> str:
        if _relative_to_home(value).rstrip("/") in ("", "."):
            raise RemoteError(
                f"REMOTE_DIR={value!r} is the remote home folder (or /) itself: a push deletes what the project "
                "does not have, so it needs a folder of its own, e.g. REMOTE_DIR=loraops"
            )
        return value

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else str(self.host)

    @property
    def remote_dir(self) -> str:
        return _relative_to_home(self.dir)

    @property
    def ssh_args(self) -> list[str]:
        return shlex.split(self.ssh_options)


def _relative_to_home(folder: str) -> str:
    # rsync's protected args and `cd --` do not expand `~`; the ssh login starts in home anyway.
    d = folder.strip()
    return "." if d in ("~", "~/") else d[2:] if d.startswith("~/") else d


class _Environ(EnvSettingsSource):
    """The environment, or a mapping standing in for it."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # As pydantic-settings reads os.environ: names without regard to case, empty values as unset.
        return {name.lower(): value for name, value in self._environ.items() if value != ""}


class _Variables(BaseSettings, RemoteConfig):
    """How RemoteConfig's keys are named as variables: REMOTE_<KEY>, or the alias a key declares."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="ignore")


def _by_name(values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings among what a source found, keyed by field name whether found under the name or the alias;
    everything else (a .env file also holds tokens) is left out, so it can never reach a message."""
    fields = RemoteConfig.model_fields
    names = {info.validation_alias: name for name, info in fields.items() if info.validation_alias}
    renamed = {names.get(key, key): value for key, value in values.items()}
    return {key: value for key, value in renamed.items() if key in fields}


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file; values stay in this dict, never in os.environ."""
    return {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}


def load_settings(
    local_dir: Path | None = None,
    config: RemoteConfig | None = None,
    environ: Mapping[str, str] | None = None,
) -> RemoteSettings:
    """Settings from the environment, then `<local_dir>/.env`, then the config's `remote:` section."""
    local_dir = Path(local_dir or Path.cwd()).resolve()
    environ = os.environ if environ is None else environ
    dotenv = DotEnvSettingsSource(_Variables, env_file=local_dir / ".env")()
    found = _Environ(_Variables, environ)()
    values = {**(config.model_dump() if config else {}), **_by_name(dotenv), **_by_name(found)}
    forward = tuple((name, str(values[name.lower()])) for name in FORWARDED_ENV if values.get(name.lower()))
    forward += _tracking_server(environ, read_dotenv(local_dir / ".env"))
    try:
        return RemoteSettings(**values, local_dir=local_dir, forward_env=forward)
    except ValidationError as exc:
        raise RemoteError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    error = exc.errors()[0]
    key = str(error["loc"][0]) if error["loc"] else "remote"
    alias = RemoteConfig.model_fields[key].validation_alias if key in RemoteConfig.model_fields else None
    name = alias if isinstance(alias, str) else ENV_PREFIX + key.upper()
    return f"{name} (remote.{key})={error['input']!r}: {error['msg']}"


def _tracking_server(*sources: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """MLFLOW_TRACKING_URI, when it names a server the job can log to itself (see loraops.tracking.importer)."""
    from loraops.tracking.store import forwardable_uri

    uri = forwardable_uri(next((s["MLFLOW_TRACKING_URI"] for s in sources if s.get("MLFLOW_TRACKING_URI")), None))
    return (("MLFLOW_TRACKING_URI", uri),) if uri else ()
