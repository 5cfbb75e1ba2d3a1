"""Training files from a lakeFS repository, pinned to one commit and cached locally.

The ref (branch, tag or commit id) is resolved to a commit id first, and everything after that
reads at the commit id: a branch that moves mid-fetch cannot mix two versions, and the commit id
is what a run's manifest records to reproduce it. Only committed data is read; uncommitted
changes on a branch are invisible, as they would not be reproducible.

Credentials come from the environment only, so they never reach a config snapshot or a log.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import lakefs
import urllib3
from lakefs.exceptions import (
    ForbiddenException,
    LakeFSException,
    NotAuthorizedException,
    NotFoundException,
    ServerException,
    api_exception_handler,
)

from loraops.data.datafiles import EVAL_DIRNAME
from loraops.data.files import DATA_SUFFIXES, NOT_DATA
from loraops.errors import DataError, LoraopsError
from loraops.secrets import REDACTED, public_url, scrub

log = logging.getLogger(__name__)

ENDPOINT_ENV = "LAKEFS_ENDPOINT"
# (canonical name, alias): the aliases are the names lakectl and AWS-style tooling use
ACCESS_KEY_ENVS = ("LAKEFS_ACCESS_KEY", "LAKEFS_ACCESS_KEY_ID")
SECRET_KEY_ENVS = ("LAKEFS_SECRET_KEY", "LAKEFS_SECRET_ACCESS_KEY")

# (connect, read) seconds: without them an unroutable endpoint hangs the run for minutes
REQUEST_TIMEOUT = (10.0, 120.0)
LIST_PAGE_SIZE = 1000  # lakeFS's maximum page; fewer round trips for big prefixes
DOWNLOAD_CHUNK = 8 << 20  # ranged reads keep memory flat for large files

# lakeFS's own rule for repository ids; checking it here also keeps the cache path safe
_REPOSITORY_ID = re.compile(r"[a-z0-9][a-z0-9-]{2,62}")
_COMMIT_ID = re.compile(r"[0-9a-f]{64}")  # sha256 hex, as lakeFS names commits


@dataclass(frozen=True)
class Credentials:
    endpoint: str
    access_key: str
    secret_key: str

    def __repr__(self) -> str:  # keeps the secret out of tracebacks with locals and debug prints
        return f"Credentials(endpoint={self.endpoint!r}, access_key={self.access_key!r}, secret_key={REDACTED!r})"


@dataclass(frozen=True)
class LakeFSSnapshot:
    """Training files fetched from one lakeFS commit."""

    repository: str
    ref: str  # as asked for: branch, tag or commit id
    commit_id: str  # what `ref` resolved to; every file was read at this commit
    prefix: str  # normalised: no leading or trailing slash
    files: list[Path]  # local cached copies, sorted
    objects: list[str]  # lakeFS object paths of `files`, in the same order

    def manifest_entry(self) -> dict[str, Any]:
        """What a run manifest needs to fetch exactly the same data again."""
        return {"repository": self.repository, "ref": self.ref, "commit_id": self.commit_id, "prefix": self.prefix}


def fetch_lakefs(repository: str, ref: str, prefix: str, pattern: str, cache_dir: Path) -> LakeFSSnapshot:
    """Download the files matching `pattern` under `prefix` at `ref` into `cache_dir`.

    `pattern` is a glob relative to the prefix, with pathlib's rules (`*` stays within a folder,
    `**` spans folders); anything under `<prefix>/eval/` is never training data. Files are cached
    under `cache_dir/<repository>/<commit_id>/<object path>` and, as commits are immutable, a file
    already there is not downloaded again. Raises LoraopsError for credentials, connection, unknown
    repository or ref; DataError when no file matches.
    """
    _check_repository_id(repository)
    if not ref:
        raise LoraopsError("lakeFS ref is empty: name a branch, tag or commit id")
    creds = read_credentials()
    prefix = prefix.strip("/")
    with _translated_errors(creds, repository, ref):
        client = lakefs.Client(host=creds.endpoint, username=creds.access_key, password=creds.secret_key)
        commit_id = _resolve(client, repository, ref, public_url(creds.endpoint))
        log.info("lakeFS %s@%s resolved to commit %s", repository, ref, commit_id)
        pinned = lakefs.Repository(repository, client=client).commit(commit_id)
        wanted = sorted(
            (
                (info.path, info.size_bytes)
                for info in _list_objects(pinned, prefix)
                if _is_training_file(_relative(info.path, prefix), pattern)
            ),
            key=lambda item: item[0].split("/"),  # folder by folder, as the local source's sorted Paths
        )
        if not wanted:
            where = f"lakefs://{repository}/{commit_id}/{prefix}"
            raise DataError(where, None, f"no training files match dataset_pattern {pattern!r} (ref {ref!r})")
        root = Path(cache_dir) / repository / commit_id
        files = [_cached(pinned, path, size, root) for path, size in wanted]
    downloaded = sum(1 for f in files if f.downloaded)
    log.info(
        "lakeFS: %d files at commit %s (%d downloaded, %d from cache %s)",
        len(files),
        commit_id[:12],
        downloaded,
        len(files) - downloaded,
        root,
    )
    return LakeFSSnapshot(
        repository=repository,
        ref=ref,
        commit_id=commit_id,
        prefix=prefix,
        files=[f.path for f in files],
        objects=[path for path, _ in wanted],
    )


def read_credentials() -> Credentials:
    """Endpoint and keys from the environment; names every missing variable, never a value."""
    endpoint = os.environ.get(ENDPOINT_ENV, "").strip()
    access_key = _first_env(ACCESS_KEY_ENVS)
    secret_key = _first_env(SECRET_KEY_ENVS)
    missing = [ENDPOINT_ENV] if not endpoint else []
    missing += [
        f"{names[0]} (or {names[1]})"
        for names, value in ((ACCESS_KEY_ENVS, access_key), (SECRET_KEY_ENVS, secret_key))
        if not value
    ]
    if missing:
        raise LoraopsError(f"lakeFS data source: set {', '.join(missing)} in the environment")
    return Credentials(endpoint=endpoint, access_key=access_key, secret_key=secret_key)


def _first_env(names: tuple[str, ...]) -> str:
    return next((os.environ[n] for n in names if os.environ.get(n)), "")


def _check_repository_id(repository: str) -> None:
    if not _REPOSITORY_ID.fullmatch(repository):
        raise LoraopsError(
            f"lakeFS repository {repository!r} is not a valid repository id "
            "(3-63 lowercase letters, digits and dashes, starting with a letter or digit)"
        )


def _resolve(client: lakefs.Client, repository: str, ref: str, endpoint: str) -> str:
    """The commit id `ref` points at now. The repository is looked up first to tell the two 404s apart."""
    api = client.sdk_client
    try:
        with api_exception_handler():
            api.repositories_api.get_repository(repository, _request_timeout=REQUEST_TIMEOUT)
    except NotFoundException as exc:
        if not _is_lakefs_error(exc):  # a web server, but not lakeFS's API: a wrong endpoint, not a wrong name
            raise LoraopsError(
                f"{endpoint} answered HTTP 404 without a lakeFS error: is {ENDPOINT_ENV} the lakeFS server's address?"
            ) from exc
        message = f"lakeFS repository {repository!r} not found at {endpoint} ({_server_message(exc)})"
        raise LoraopsError(message) from exc
    try:
        with api_exception_handler():
            commit_id = api.commits_api.get_commit(repository, ref, _request_timeout=REQUEST_TIMEOUT).id
            if not _COMMIT_ID.fullmatch(commit_id):
                # lakeFS servers before ~1.0 echo the ref asked for as the commit's id; the log's
                # first entry always carries the real id.
                log_page = api.refs_api.log_commits(repository, ref, amount=1, _request_timeout=REQUEST_TIMEOUT)
                commit_id = log_page.results[0].id if log_page.results else ""
    except NotFoundException as exc:
        raise LoraopsError(
            f"lakeFS repository {repository!r} has no branch, tag or commit {ref!r} ({_server_message(exc)})"
        ) from exc
    if not _COMMIT_ID.fullmatch(commit_id):
        raise LoraopsError(f"lakeFS returned {commit_id!r}, not a commit id, for {repository}@{ref}")
    return commit_id


def _list_objects(pinned: lakefs.Reference, prefix: str) -> Iterator[Any]:
    # The trailing slash makes the prefix a folder: `data` must not also list `data-old/...`.
    list_prefix = f"{prefix}/" if prefix else ""
    for entry in pinned.objects(prefix=list_prefix, amount=LIST_PAGE_SIZE, _request_timeout=REQUEST_TIMEOUT):
        if isinstance(entry, lakefs.ObjectInfo):
            yield entry


def _relative(path: str, prefix: str) -> str:
    return path[len(prefix) + 1 :] if prefix else path


def _is_training_file(relative: str, pattern: str) -> bool:
    """Same rule as the local source: matches the glob, and is not under the prefix's eval/ folder."""
    parts = relative.split("/")
    data = Path(relative).suffix in DATA_SUFFIXES and Path(relative).name not in NOT_DATA
    return data and parts[0] != EVAL_DIRNAME and _glob_match(parts, pattern.strip("/").split("/"))


def _glob_match(parts: list[str], pattern: list[str]) -> bool:
    """pathlib's Path.glob rules on a path split into components (case-sensitive, `**` = any folders)."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        # Path.glob("**") yields folders only, so a trailing `**` never matches a file
        return bool(rest) and any(_glob_match(parts[i:], rest) for i in range(len(parts)))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _glob_match(parts[1:], rest)


@dataclass(frozen=True)
class _CachedFile:
    path: Path
    downloaded: bool


def _cached(pinned: lakefs.Reference, object_path: str, size: int | None, root: Path) -> _CachedFile:
    """The local copy of `object_path`, downloaded unless a complete one is already cached."""
    parts = object_path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise LoraopsError(f"lakeFS object {object_path!r} has a path that cannot be cached safely")
    dest = root.joinpath(*parts)
    # Files only ever appear by atomic rename, so an existing file is complete; the size check
    # catches a cache someone edited by hand.
    if dest.is_file() and (size is None or dest.stat().st_size == size):
        return _CachedFile(dest, downloaded=False)
    _download(pinned, object_path, size, dest)
    return _CachedFile(dest, downloaded=True)


def _download(pinned: lakefs.Reference, object_path: str, size: int | None, dest: Path) -> None:
    """Write the object to `dest` atomically: readers and concurrent runs never see a partial file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            # pre_sign=False: data comes through lakeFS itself, so only the lakeFS endpoint needs
            # to be reachable, not the object store behind it.
            obj = pinned.object(object_path)
            with obj.reader(mode="rb", pre_sign=False, _request_timeout=REQUEST_TIMEOUT) as src:
                while chunk := src.read(DOWNLOAD_CHUNK):
                    out.write(chunk if isinstance(chunk, bytes) else chunk.encode())
            written = out.tell()
        if size is not None and written != size:
            raise LoraopsError(f"lakeFS object {object_path!r}: got {written} bytes, expected {size}")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _translated_errors(creds: Credentials, repository: str, ref: str) -> Iterator[None]:
    """Turn SDK, connection and cache errors into one clear LoraopsError that never holds the secret."""
    try:
        yield
    except LoraopsError:
        raise
    except (LakeFSException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise LoraopsError(scrub(_describe(exc, creds, repository, ref), [creds.secret_key])) from exc


def _describe(exc: Exception, creds: Credentials, repository: str, ref: str) -> str:
    endpoint = public_url(creds.endpoint)
    target = f"lakeFS repository {repository!r} at ref {ref!r}"
    # lakeFS exceptions first: some of them are OSError subclasses too
    if isinstance(exc, NotAuthorizedException):
        return (
            f"lakeFS at {endpoint} rejected the credentials from {ACCESS_KEY_ENVS[0]} / "
            f"{SECRET_KEY_ENVS[0]} ({_server_message(exc)})"
        )
    if isinstance(exc, ForbiddenException):
        return f"the lakeFS credentials may not read {target} ({_server_message(exc)})"
    if isinstance(exc, ServerException):
        return f"lakeFS at {endpoint} failed reading {target}: {_server_message(exc)}"
    if isinstance(exc, LakeFSException):
        return f"lakeFS client error reading {target}: {exc}"
    if isinstance(exc, urllib3.exceptions.HTTPError):
        reason = getattr(exc, "reason", None) or exc
        return f"cannot reach lakeFS at {endpoint} (set by {ENDPOINT_ENV}): {reason}"
    return f"cannot write the lakeFS cache: {exc}"


def _server_message(exc: ServerException) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    detail = body.get("message") or exc.reason or "no message"
    return f"HTTP {exc.status_code}: {detail}" if exc.status_code else str(detail)


def _is_lakefs_error(exc: ServerException) -> bool:
    return isinstance(exc.body, dict) and isinstance(exc.body.get("message"), str)
