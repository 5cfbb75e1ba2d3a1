"""A fake lakeFS server: the few API endpoints the lakeFS Python SDK calls to read a commit.

It follows lakeFS's published OpenAPI (base path /api/v1, HTTP basic auth with access key id and
secret, JSON bodies shaped like lakefs_sdk's models, errors as `{"message": ...}`), keeping
repositories, branches, tags and commits in memory. Endpoints:

    GET /api/v1/config                                          Config (the SDK probes it for pre-sign support)
    GET /api/v1/repositories/{repo}                             Repository
    GET /api/v1/repositories/{repo}/commits/{ref}               Commit that a branch, tag or commit id points at
    GET /api/v1/repositories/{repo}/refs/{ref}/commits          CommitList: the log from a ref (after, amount)
    GET /api/v1/repositories/{repo}/refs/{ref}/objects/ls       ObjectStatsList (prefix, after, amount)
    GET /api/v1/repositories/{repo}/refs/{ref}/objects?path=    object bytes, with Range support

Every request is recorded in `requests`, and `after_request` hooks run before its response is
sent, so a test can move a branch between two calls of the client.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

API = "/api/v1"
MAX_PAGE = 1000  # lakeFS caps `amount` at 1000 and defaults to 100
DEFAULT_PAGE = 100


@dataclass
class Commit:
    id: str
    parents: list[str]
    message: str
    creation_date: int
    objects: dict[str, bytes]  # the full tree at this commit

    def as_json(self, shown_id: Optional[str] = None) -> dict[str, Any]:
        return {
            "id": shown_id or self.id,
            "parents": self.parents,
            "committer": "fake",
            "message": self.message,
            "creation_date": self.creation_date,
            "meta_range_id": hashlib.sha256(self.id.encode()).hexdigest(),
            "metadata": {},
            "generation": len(self.parents),
            "version": 1,
        }


@dataclass
class Repo:
    id: str
    default_branch: str
    creation_date: int
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit id
    tags: dict[str, str] = field(default_factory=dict)  # name -> commit id
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, ref: str) -> Optional[Commit]:
        """The commit a branch, tag, commit id or unique commit id prefix points at, or None."""
        commit_id = self.branches.get(ref) or self.tags.get(ref)
        if commit_id is None and re.fullmatch(r"[0-9a-f]{6,64}", ref):
            matches = [c for c in self.commits if c.startswith(ref)]
            commit_id = matches[0] if len(matches) == 1 else None
        return self.commits.get(commit_id) if commit_id else None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "creation_date": self.creation_date,
            "default_branch": self.default_branch,
            "storage_namespace": f"local://fake/{self.id}",
            "read_only": False,
        }


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without /api/v1 and without the query
    query: dict[str, str]
    headers: dict[str, str]


class FakeLakeFS:
    """In-memory lakeFS; `start()` serves it on 127.0.0.1 on a free port."""

    def __init__(self, access_key: str, secret_key: str) -> None:
        self.access_key, self.secret_key = access_key, secret_key
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.after_request: list[Callable[[Request], None]] = []
        self.echo_ref_as_commit_id = False  # behave like lakeFS servers before ~1.0 on GET .../commits/{ref}
        self.lock = threading.RLock()
        self._httpd: Optional[ThreadingHTTPServer] = None

    # ---- state, as a lakeFS user would create it

    def create_repository(self, repo_id: str, default_branch: str = "main") -> None:
        with self.lock:
            repo = Repo(repo_id, default_branch, int(time.time()))
            root = self._new_commit(repo, [], "Repository created", {})
            repo.branches[default_branch] = root.id
            self.repos[repo_id] = repo

    def commit(self, repo_id: str, branch: str, changes: dict[str, Optional[bytes]], message: str = "update") -> str:
        """Commit `changes` (path -> bytes, or None to delete) on `branch`; returns the new commit id."""
        with self.lock:
            repo = self.repos[repo_id]
            parent = repo.commits[repo.branches[branch]]
            tree = dict(parent.objects)
            for path, data in changes.items():
                if data is None:
                    tree.pop(path, None)
                else:
                    tree[path] = data
            commit = self._new_commit(repo, [parent.id], message, tree)
            repo.branches[branch] = commit.id
            return commit.id

    def create_tag(self, repo_id: str, tag: str, ref: str) -> None:
        with self.lock:
            repo = self.repos[repo_id]
            repo.tags[tag] = repo.resolve(ref).id  # type: ignore[union-attr]

    def object_reads(self) -> list[Request]:
        """The requests that fetched object contents."""
        return [r for r in self.requests if r.method == "GET" and r.path.endswith("/objects")]

    @staticmethod
    def _new_commit(repo: Repo, parents: list[str], message: str, tree: dict[str, bytes]) -> Commit:
        digest = hashlib.sha256(json.dumps([parents, message, len(repo.commits)]).encode())
        for path in sorted(tree):
            digest.update(path.encode() + b"\0" + hashlib.sha256(tree[path]).digest())
        commit = Commit(digest.hexdigest(), parents, message, int(time.time()), tree)
        repo.commits[commit.id] = commit
        return commit

    # ---- serving

    @property
    def endpoint(self) -> str:
        assert self._httpd is not None, "not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeLakeFS:
        fake = self

        class Handler(_Handler):
            server_state = fake

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        # a short poll interval makes stop() quick
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class _Response:
    status: int
    body: bytes
    headers: dict[str, str]


def _json(payload: Any, status: int = 200, headers: Optional[dict[str, str]] = None) -> _Response:
    return _Response(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


class _Handler(BaseHTTPRequestHandler):
    server_state: FakeLakeFS
    protocol_version = "HTTP/1.1"  # keep-alive, as urllib3 pools connections
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid a 40 ms stall on each

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # tests read `requests`, not stderr

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        request = Request("GET", unquote(url.path).removeprefix(API), query, dict(self.headers.items()))
        fake = self.server_state
        with fake.lock:
            fake.requests.append(request)
        try:
            self._check_auth()
            if not url.path.startswith(API + "/"):
                raise _HTTPError(404, "path not found")
            response = self._route(request)
        except _HTTPError as err:
            response = _json({"message": err.message}, err.status, err.headers)
        # Hooks run before the client sees the response, so its next request sees their changes.
        for hook in list(fake.after_request):
            hook(request)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def _check_auth(self) -> None:
        fake = self.server_state
        expected = base64.b64encode(f"{fake.access_key}:{fake.secret_key}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {expected}":
            raise _HTTPError(401, "error authenticating request")

    def _route(self, request: Request) -> _Response:
        fake, path = self.server_state, request.path
        if path == "/config":
            return _json(_CONFIG)
        m = re.fullmatch(r"/repositories/([^/]+)(/.*)?", path)
        if not m:
            raise _HTTPError(404, "path not found")
        with fake.lock:
            repo = fake.repos.get(m.group(1))
            if repo is None:
                raise _HTTPError(404, "repository not found")
            rest = m.group(2) or ""
            if rest == "":
                return _json(repo.as_json())
            if c := re.fullmatch(r"/commits/([^/]+)", rest):
                commit = _commit(repo, c.group(1))
                # old lakeFS servers answered with the ref as asked for, not the commit's own id
                return _json(commit.as_json(c.group(1) if fake.echo_ref_as_commit_id else None))
            if c := re.fullmatch(r"/refs/([^/]+)/commits", rest):
                return _json(_log(repo, _commit(repo, c.group(1)), request.query))
            if o := re.fullmatch(r"/refs/([^/]+)/objects/ls", rest):
                return _json(_listing(_commit(repo, o.group(1)), request.query))
            if o := re.fullmatch(r"/refs/([^/]+)/objects", rest):
                return self._object(_commit(repo, o.group(1)), request.query)
        raise _HTTPError(404, "path not found")

    def _object(self, commit: Commit, query: dict[str, str]) -> _Response:
        if "path" not in query:
            raise _HTTPError(400, "path is required")
        data = commit.objects.get(query["path"])
        if data is None:
            raise _HTTPError(404, "not found: object not found")
        headers = {"Content-Type": "application/octet-stream", "ETag": f'"{hashlib.md5(data).hexdigest()}"'}
        if "Range" not in self.headers:
            return _Response(200, data, headers)
        start, end = _parse_range(self.headers["Range"], len(data))
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return _Response(206, data[start : end + 1], headers)


def _commit(repo: Repo, ref: str) -> Commit:
    commit = repo.resolve(ref)
    if commit is None:
        raise _HTTPError(404, "commit not found")
    return commit


def _log(repo: Repo, head: Commit, query: dict[str, str]) -> dict[str, Any]:
    """CommitList: `head` then its first parents, newest first (a linear history, as these tests make)."""
    commits, commit = [], head
    while True:
        commits.append(commit)
        if not commit.parents:
            break
        commit = repo.commits[commit.parents[0]]
    after = query.get("after", "")
    if after:
        ids = [c.id for c in commits]
        commits = commits[ids.index(after) + 1 :] if after in ids else []
    amount = min(int(query.get("amount") or DEFAULT_PAGE), MAX_PAGE)
    page = commits[:amount]
    return {
        "pagination": _pagination(len(commits) > amount, page[-1].id if page else "", len(page)),
        "results": [c.as_json() for c in page],
    }


def _pagination(has_more: bool, next_offset: str, results: int) -> dict[str, Any]:
    return {"has_more": has_more, "next_offset": next_offset, "results": results, "max_per_page": MAX_PAGE}


def _parse_range(header: str, size: int) -> tuple[int, int]:
    """One `bytes=start-[end]` range, clamped to the object; 416 when it starts past the end."""
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", header.strip())
    if not m:
        raise _HTTPError(400, f"invalid range {header!r}")
    start = int(m.group(1))
    end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
    if start >= size:
        raise _HTTPError(416, "Requested Range Not Satisfiable", {"Content-Range": f"bytes */{size}"})
    return start, end


def _listing(commit: Commit, query: dict[str, str]) -> dict[str, Any]:
    """ObjectStatsList: objects under `prefix`, after `after`, at most `amount`, in path order."""
    prefix, after = query.get("prefix", ""), query.get("after", "")
    amount = min(int(query.get("amount") or DEFAULT_PAGE), MAX_PAGE)
    paths = sorted(p for p in commit.objects if p.startswith(prefix) and p > after)
    page = paths[:amount]
    return {
        "pagination": _pagination(len(paths) > amount, page[-1] if page else "", len(page)),
        "results": [_object_stats(commit, p) for p in page],
    }


def _object_stats(commit: Commit, path: str) -> dict[str, Any]:
    data = commit.objects[path]
    return {
        "path": path,
        "path_type": "object",
        "physical_address": f"local://fake/{hashlib.sha256(data).hexdigest()}",
        "checksum": hashlib.md5(data).hexdigest(),
        "size_bytes": len(data),
        "mtime": commit.creation_date,
        "metadata": {},
        "content_type": "application/octet-stream",
    }


_CONFIG = {
    "version_config": {"version": "1.50.0-fake", "upgrade_recommended": False},
    "storage_config": {
        "blockstore_type": "local",
        "blockstore_namespace_example": "local://example",
        "blockstore_namespace_ValidityRegex": "^local://",
        "default_namespace_prefix": "local://fake",
        "pre_sign_support": False,
        "pre_sign_support_ui": False,
        "import_support": False,
        "import_validity_regex": "^local://",
        "pre_sign_multipart_upload": False,
    },
}
