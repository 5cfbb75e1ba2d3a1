"""A fake Hugging Face Hub on 127.0.0.1: the endpoints huggingface_hub 2.x calls to create a repository
and upload a folder without Xet (tests set HF_HUB_DISABLE_XET), recording every request it receives.

Endpoints: POST /api/repos/create, GET /api/models/<repo>[/revision/<rev>], POST /api/validate-yaml,
GET /api/models/<repo>/tree/<rev>, POST /api/models/<repo>/preupload/<rev>,
POST /<repo>.git/info/lfs/objects/batch, PUT /lfs/<oid>, POST /<repo>.git/info/lfs/objects/verify,
POST /api/models/<repo>/commit/<rev> (NDJSON).

Dataset repositories, for `snapshot_download(repo_type="dataset")` (add them with `FakeHub.add_dataset`):
GET /api/datasets/<repo>[/revision/<rev>], GET /api/datasets/<repo>/tree/<rev>[/<path>],
HEAD and GET /datasets/<repo>/resolve/<rev>/<path>. They are readable without a token unless private,
and every file is served as a plain git blob (no LFS redirect, no Xet, no Range requests).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

USER = "tester"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub's threshold for plain git blobs


@dataclass
class Request:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-case names, Authorization left out
    authorization: str | None
    body: bytes


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(
        default_factory=lambda: {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
    )
    lfs: set[str] = field(default_factory=set)  # paths stored as LFS pointers
    commits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sha(self) -> str:
        return hashlib.sha1(str(len(self.commits)).encode()).hexdigest()


@dataclass
class DatasetRepo:
    """Each commit is a whole file tree; refs (branches or tags) name commits."""

    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> path -> content
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> sha

    def resolve(self, rev: str) -> str | None:
        """The commit sha `rev` names: a ref, or a full commit sha."""
        return self.refs.get(rev) or (rev if rev in self.commits else None)


@dataclass
class Raw:
    """A response body that is a file, not JSON."""

    body: bytes
    headers: dict[str, str]


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Start with `FakeHub(token).start()`; `url` is the endpoint; `fail[name] = (status, message)` fails
    the next request of that endpoint once (names: create, info, validate, tree, preupload, lfs_batch,
    lfs_upload, lfs_verify, commit; for datasets: dataset_info, dataset_tree, dataset_file)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.datasets: dict[str, DatasetRepo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.requests: list[Request] = []
        self.fail: dict[str, tuple[int, str]] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "FakeHub":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def file(self, repo_id: str, path: str) -> bytes:
        """A committed file's content (LFS content resolved)."""
        repo = self.repos[repo_id]
        data = repo.files[path]
        return self.lfs_store[data.decode()] if path in repo.lfs else data

    def tree(self, repo_id: str) -> dict[str, bytes]:
        return {path: self.file(repo_id, path) for path in self.repos[repo_id].files}

    def add_dataset(
        self, repo_id: str, files: Mapping[str, bytes | str], *, revision: str = "main", private: bool = False
    ) -> str:
        """Commit `files` (the whole tree: earlier files are gone) to `revision` of dataset `repo_id`, creating
        the repository or the branch when new; `private` applies when the repository is created. Returns the
        commit sha, as the Hub's API and X-Repo-Commit report it."""
        tree = {path: data.encode() if isinstance(data, str) else data for path, data in files.items()}
        with self.lock:
            repo = self.datasets.setdefault(repo_id, DatasetRepo(private=private))
            digest = hashlib.sha1(f"{repo_id}\0{len(repo.commits)}\0".encode())
            for path in sorted(tree):
                digest.update(f"{path}\0{git_blob_oid(tree[path])}\0".encode())
            sha = digest.hexdigest()
            repo.commits[sha] = tree
            repo.refs[revision] = sha
        return sha


ROUTES = [
    ("POST", r"/api/repos/create", "create"),
    ("POST", r"/api/validate-yaml", "validate"),
    ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/?]+)", "tree"),
    ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/?]+)", "preupload"),
    ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/?]+)", "commit"),
    ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)(/revision/(?P<rev>[^/?]+))?", "info"),
    ("POST", r"/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", "lfs_batch"),
    ("POST", r"/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/verify", "lfs_verify"),
    ("PUT", r"/lfs/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
    ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(/(?P<path>.+))?", "dataset_tree"),
    ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)(/revision/(?P<rev>[^/]+))?", "dataset_info"),
    ("HEAD", r"/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "dataset_file"),
    ("GET", r"/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "dataset_file"),
]
NO_AUTH = {"lfs_upload"}  # a pre-signed storage URL on the real Hub: no Authorization header
# Public datasets are readable without a token; `_dataset` checks the token for private ones.
AUTH_OPTIONAL = {"dataset_tree", "dataset_info", "dataset_file"}


class HubError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _handle(self) -> None:
            body = self._body()
            headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
            auth = self.headers.get("Authorization")
            with hub.lock:
                hub.requests.append(Request(self.command, self.path, headers, auth, body))
            try:
                status, payload = self._route(urlsplit(self.path), body, auth)
            except HubError as exc:
                extra = {"X-Error-Message": exc.message, **({"X-Error-Code": exc.code} if exc.code else {})}
                extra.update(exc.headers)
                return self._send(exc.status, {"error": exc.message}, extra)
            self._send(status, payload)

        do_GET = do_POST = do_PUT = do_HEAD = _handle

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            if isinstance(payload, Raw):
                data, headers = payload.body, {"Content-Type": "application/octet-stream", **payload.headers}
            else:
                data, headers = json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))  # for HEAD too: the size of what GET sends
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":  # a body after HEAD would be read as the next response on this connection
                self.wfile.write(data)

        def _route(self, url: Any, body: bytes, auth: str | None) -> tuple[int, Any]:
            for method, pattern, name in ROUTES:
                match = re.fullmatch(pattern, url.path)
                if method == self.command and match:
                    # A token that is sent must be right, even where none is needed (as on the Hub).
                    if name not in NO_AUTH and auth != f"Bearer {hub.token}" and (auth or name not in AUTH_OPTIONAL):
                        raise HubError(401, "Invalid credentials in Authorization header")
                    if name in hub.fail:
                        raise HubError(*hub.fail.pop(name))
                    with hub.lock:
                        return getattr(self, f"_{name}")(match.groupdict(), parse_qs(url.query), body)
            raise HubError(404, f"no route for {self.command} {url.path}")

        def _repo(self, repo_id: str) -> Repo:
            if repo_id not in hub.repos:
                raise HubError(404, "Repository not found", "RepoNotFound")
            return hub.repos[repo_id]

        def _dataset(self, repo_id: str) -> DatasetRepo:
            # Like the Hub: a private repository is "not found" to anyone without the token (401, not 403).
            repo = hub.datasets.get(repo_id)
            if repo is None:
                raise HubError(404, "Repository not found", "RepoNotFound")
            if repo.private and self.headers.get("Authorization") != f"Bearer {hub.token}":
                raise HubError(401, "Invalid username or password.", "RepoNotFound")
            return repo

        def _dataset_commit(self, repo: DatasetRepo, rev: str | None) -> str:
            sha = repo.resolve(unquote(rev or "main"))
            if sha is None:
                raise HubError(404, f"Invalid rev id: {unquote(rev or 'main')}", "RevisionNotFound")
            return sha

        def _dataset_info(self, m: dict, _: dict, __: bytes) -> tuple[int, Any]:
            repo = self._dataset(m["repo"])
            sha = self._dataset_commit(repo, m["rev"])
            siblings = [{"rfilename": path} for path in sorted(repo.commits[sha])]
            return 200, {"id": m["repo"], "sha": sha, "private": repo.private, "siblings": siblings}

        def _dataset_tree(self, m: dict, query: dict, __: bytes) -> tuple[int, Any]:
            repo = self._dataset(m["repo"])
            files = repo.commits[self._dataset_commit(repo, m["rev"])]
            recursive = query.get("recursive", ["False"])[0].lower() == "true"
            prefix = f"{unquote(m['path']).strip('/')}/" if m["path"] else ""
            entries: dict[str, dict[str, Any]] = {}
            for path, data in sorted(files.items()):
                if not path.startswith(prefix):
                    continue
                parts = path[len(prefix) :].split("/")
                folders = parts[:-1] if recursive else parts[:1] if len(parts) > 1 else []
                for depth in range(1, len(folders) + 1):  # folders are listed too, as the Hub does
                    folder = prefix + "/".join(folders[:depth])
                    oid = git_blob_oid(folder.encode())  # a stand-in: nothing reads a folder's oid
                    entries.setdefault(folder, {"type": "directory", "path": folder, "oid": oid})
                if recursive or len(parts) == 1:
                    entries[path] = {"type": "file", "path": path, "size": len(data), "oid": git_blob_oid(data)}
            if prefix and not entries:
                raise HubError(404, f"{prefix} does not exist", "EntryNotFound")
            return 200, list(entries.values())

        def _dataset_file(self, m: dict, _: dict, __: bytes) -> tuple[int, Any]:
            repo = self._dataset(m["repo"])
            sha = self._dataset_commit(repo, m["rev"])
            data = repo.commits[sha].get(unquote(m["path"]))
            if data is None:  # X-Repo-Commit lets huggingface_hub cache the file's absence at this commit
                raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
            return 200, Raw(data, {"X-Repo-Commit": sha, "ETag": f'"{git_blob_oid(data)}"'})

        def _create(self, _: dict, __: dict, body: bytes) -> tuple[int, Any]:
            req = json.loads(body)
            repo_id = f"{req.get('organization') or USER}/{req['name']}"
            url = f"{hub.url}/{repo_id}"
            if repo_id in hub.repos:
                return 409, {"error": "You already created this model repo", "url": url}
            hub.repos[repo_id] = Repo(private=req.get("visibility") == "private")
            return 200, {"url": url, "name": repo_id}

        def _info(self, m: dict, _: dict, __: bytes) -> tuple[int, Any]:
            repo = self._repo(m["repo"])
            return 200, {"id": m["repo"], "sha": repo.sha, "private": repo.private}

        def _validate(self, _: dict, __: dict, body: bytes) -> tuple[int, Any]:
            content = json.loads(body)["content"]
            try:
                yaml.safe_load(content.split("\n---", 1)[0][3:])
            except yaml.YAMLError as exc:
                return 400, {"errors": [{"message": str(exc)}], "warnings": []}
            return 200, {"errors": [], "warnings": []}

        def _tree(self, m: dict, _: dict, __: bytes) -> tuple[int, Any]:
            repo = self._repo(m["repo"])
            return 200, [
                {"type": "file", "path": p, "size": len(hub.file(m["repo"], p)), "oid": git_blob_oid(d)}
                for p, d in repo.files.items()
            ]

        def _preupload(self, m: dict, _: dict, body: bytes) -> tuple[int, Any]:
            repo = self._repo(m["repo"])
            files = []
            for f in json.loads(body)["files"]:
                sample = base64.b64decode(f["sample"])
                lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_SIZE or b"\0" in sample
                old = repo.files.get(f["path"])
                oid = None if old is None else (old.decode() if f["path"] in repo.lfs else git_blob_oid(old))
                files.append(
                    {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
                )
            return 200, {"files": files}

        def _lfs_batch(self, m: dict, _: dict, body: bytes) -> tuple[int, Any]:
            self._repo(m["repo"])
            objects = []
            for obj in json.loads(body)["objects"]:
                entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if obj["oid"] not in hub.lfs_store:  # already stored: no actions, the client skips it
                    entry["actions"] = {
                        "upload": {"href": f"{hub.url}/lfs/{obj['oid']}"},
                        "verify": {"href": f"{hub.url}/{m['repo']}.git/info/lfs/objects/verify"},
                    }
                objects.append(entry)
            return 200, {"transfer": "basic", "objects": objects}

        def _lfs_upload(self, m: dict, _: dict, body: bytes) -> tuple[int, Any]:
            if hashlib.sha256(body).hexdigest() != m["oid"]:
                raise HubError(400, "sha256 mismatch")
            hub.lfs_store[m["oid"]] = body
            return 200, {}

        def _lfs_verify(self, m: dict, _: dict, body: bytes) -> tuple[int, Any]:
            req = json.loads(body)
            if len(hub.lfs_store.get(req["oid"], b"")) != req["size"] or req["oid"] not in hub.lfs_store:
                raise HubError(404, "object not found")
            return 200, {}

        def _commit(self, m: dict, query: dict, body: bytes) -> tuple[int, Any]:
            repo = self._repo(m["repo"])
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            files, lfs, deleted = dict(repo.files), set(repo.lfs), []
            for item in lines[1:]:
                value = item["value"]
                if item["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                    lfs.discard(value["path"])
                elif item["key"] == "lfsFile":
                    if len(hub.lfs_store.get(value["oid"], b"")) != value["size"]:
                        raise HubError(400, f"LFS object {value['oid']} was never uploaded")
                    files[value["path"]] = value["oid"].encode()
                    lfs.add(value["path"])
                elif item["key"] == "deletedFile":
                    files.pop(value["path"], None)
                    lfs.discard(value["path"])
                    deleted.append(value["path"])
                else:
                    raise HubError(400, f"unsupported commit operation {item['key']}")
            repo.files, repo.lfs = files, lfs  # all or nothing, like a git commit
            repo.commits.append(
                {"header": lines[0]["value"], "paths": [i["value"]["path"] for i in lines[1:]], "deleted": deleted}
            )
            return 200, {
                "commitUrl": f"{hub.url}/{m['repo']}/commit/{repo.sha}",
                "commitOid": repo.sha,
                "pullRequestUrl": None,
            }

    return Handler
