"""Hugging Face access: the endpoint, the cache, the offline switch, the token, and what a failure means.

huggingface_hub and transformers read HF_ENDPOINT, the cache variables and HF_HUB_OFFLINE once, when they
are imported; loraops reads them when it needs them (a value from .env, set after import, still counts) and
passes them explicitly. Models, Hub datasets and Hub publishing all ask here, so they follow one rule.

The token is handed to huggingface_hub and nowhere else; every message built here is scrubbed of it.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loraops.errors import LoraopsError
from loraops.secrets import scrub

TOKEN_ENV, OFFLINE_ENV, ENDPOINT_ENV = "HF_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"
DEFAULT_ENDPOINT = "https://huggingface.co"
# Newest first; TRANSFORMERS_CACHE is the legacy name that transformers 5 itself no longer reads.
CACHE_ENVS = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE")
_TRUE = ("1", "true", "yes", "on")
_MAX_DETAIL = 300  # characters of a server's or library's message kept in ours


def endpoint() -> str:
    return (os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUE


def cache_dir() -> Path:
    """The hub cache by huggingface_hub's own rules (and the legacy names), read now."""
    for name in CACHE_ENVS:
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def load_kwargs() -> dict[str, Any]:
    """What `from_pretrained` needs to read the same cache as everything else here."""
    return {"cache_dir": str(cache_dir())}


def token() -> str | None:
    """HF_TOKEN, else the token `hf auth login` stored: what huggingface_hub sends."""
    from huggingface_hub import get_token

    return os.environ.get(TOKEN_ENV, "").strip() or get_token()


def require_token(explicit: str | None = None) -> str:
    found = explicit or token()
    if not found:
        raise LoraopsError(
            f"no Hugging Face token: set {TOKEN_ENV} (in .env, which git ignores) or run `hf auth login`"
        )
    return found


def reachable(url: str | None = None, timeout_s: float = 5.0) -> bool:
    """Whether a TCP connection to the endpoint opens: seconds, where huggingface_hub's retries take a minute."""
    parts = urlsplit(url or endpoint())
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Access:
    """What was being done with the Hub, so that a failure can be told in the user's terms."""

    name: str  # "Hugging Face dataset tester/qa", "Hub repository me/model"
    repo_url: str  # the page where a gated repository's conditions are accepted
    check: str  # what to check when the repository is not found: a config key or an option
    revision: str | None = None
    revision_key: str = "the revision"
    writing: bool = False
    offline: bool = False  # HF_HUB_OFFLINE was set
    unreachable: bool = False  # the endpoint did not answer, so only the cache was tried
    endpoint: str = field(default_factory=endpoint)

    @property
    def target(self) -> str:
        return self.name + (f" at revision {self.revision!r}" if self.revision else "")

    @property
    def verb(self) -> str:
        return "writing" if self.writing else "reading"


@contextmanager
def translated_errors(access: Access, secret: str | None = None) -> Iterator[None]:
    """huggingface_hub's, the network's and the cache's errors as one clear line that never holds the token."""
    try:
        yield
    except LoraopsError:
        raise
    except Exception as exc:
        if not isinstance(exc, (OSError, *connection_errors())):  # HfHubHTTPError is an OSError
            raise
        # `from None`: a chained error may hold the request, its headers or a reply echoing the token.
        raise LoraopsError(describe(exc, access, secret)) from None


def describe(exc: BaseException, access: Access, secret: str | None = None) -> str:
    """One line saying what went wrong and what to do, scrubbed of the token (and of `secret`, one passed in)."""
    return scrub(_describe(exc, access), [secret, os.environ.get(TOKEN_ENV), token()])


def _describe(exc: BaseException, access: Access) -> str:
    from huggingface_hub.errors import (
        FileMetadataError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    here = access.endpoint
    # Most specific first: GatedRepoError is a RepositoryNotFoundError, and every HfHubHTTPError an OSError.
    if isinstance(exc, GatedRepoError):
        return (
            f"{access.target} is gated: accept its conditions at {access.repo_url} and set {TOKEN_ENV} to a token "
            "of that account"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return f"{access.name} not found at {here}: check {access.check}; {_token_hint(access)}"
    if isinstance(exc, RevisionNotFoundError):
        return f"{access.name} has no branch, tag or commit {access.revision!r}: check {access.revision_key}"
    if isinstance(exc, LocalEntryNotFoundError):
        if access.offline or access.unreachable or not isinstance(exc.__cause__, Exception):
            return _not_cached(exc, access)
        return _describe(exc.__cause__, access)  # online, the Hub failed: its error is the one to tell
    if isinstance(exc, HfHubHTTPError):
        return _http_problem(exc, access)
    if isinstance(exc, FileMetadataError):
        return (
            f"{here} does not answer like a Hugging Face Hub {access.verb} {access.target}: check {ENDPOINT_ENV} "
            f"and any proxy ({first_line(exc)})"
        )
    if isinstance(exc, connection_errors()):
        return f"cannot reach {here} (set by {ENDPOINT_ENV}) {access.verb} {access.target}: {first_line(exc)}"
    return f"cannot write the Hugging Face cache {cache_dir()} (HF_HOME / HF_HUB_CACHE): {first_line(exc)}"


def _http_problem(exc: Any, access: Access) -> str:
    here, status = access.endpoint, getattr(getattr(exc, "response", None), "status_code", None)
    if status == 401:
        return f"{here} rejected the token in {TOKEN_ENV} (invalid or expired) {access.verb} {access.target}"
    if status == 403:
        right = "write" if access.writing else "read"
        return (
            f"{here} refused {access.target} (HTTP 403: {server_message(exc)}): the token in {TOKEN_ENV} may lack "
            f"{right} access"
        )
    return f"{here} failed {access.verb} {access.target}: HTTP {status}: {server_message(exc)}"


def _not_cached(exc: BaseException, access: Access) -> str:
    from huggingface_hub.errors import IncompleteSnapshotError

    what = "only partly in" if isinstance(exc, IncompleteSnapshotError) else "not in"
    cache = cache_dir()
    if access.unreachable:
        return (
            f"cannot reach {access.endpoint} (set by {ENDPOINT_ENV}), and {access.target} is {what} the local "
            f"Hugging Face cache {cache}: check the network or {ENDPOINT_ENV}"
        )
    if access.offline:
        return (
            f"{OFFLINE_ENV} is set and {access.target} is {what} the local Hugging Face cache {cache}: "
            f"fetch it once with network access, or unset {OFFLINE_ENV}"
        )
    return f"{access.target} could not be fetched from {access.endpoint} nor found in the cache: {first_line(exc)}"


def _token_hint(access: Access) -> str:
    right = "write to" if access.writing else "read"
    if token():
        return f"if it is private, the token in {TOKEN_ENV} may not {right} it"
    return f"if it is private, set {TOKEN_ENV} to a token that may {right} it"


def connection_errors() -> tuple[type[BaseException], ...]:
    """What a request that never got an answer raises (huggingface_hub 1.x speaks through httpx, 2.x httpx2)."""
    errors: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    for name in ("httpx", "httpx2"):
        try:
            errors += (importlib.import_module(name).TransportError,)
        except ImportError:
            pass
    return errors


def server_message(exc: Any) -> str:
    response = getattr(exc, "response", None)
    header = response.headers.get("X-Error-Message") if response is not None else None
    return str(getattr(exc, "server_message", None) or header or first_line(exc))[:_MAX_DETAIL]


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:_MAX_DETAIL]
