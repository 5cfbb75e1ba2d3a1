"""The lakeFS data source, through the real lakeFS SDK, against the fake server in lakefs_server.py."""

from __future__ import annotations

import base64
import functools
import logging
import socket
import threading
import time
import traceback
from contextlib import ExitStack, contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from lakefs_server import FakeLakeFS, Request

from loraops.data import lakefs_source
from loraops.data.datafiles import DataFile, dataset_sha256, fingerprint
from loraops.data.lakefs_source import LakeFSSnapshot, fetch_lakefs
from loraops.data.sources import find_training_files
from loraops.errors import DataError, LoraopsError

ACCESS_KEY = "AKIAFAKELOCAL000001"
SECRET_KEY = "s3cr3t-Sentinel-9f2c7b"  # must never show up in an error, a log line or output
REPO = "training-data"
ALL_ENV = (
    "LAKEFS_ENDPOINT",
    "LAKEFS_ACCESS_KEY",
    "LAKEFS_ACCESS_KEY_ID",
    "LAKEFS_SECRET_KEY",
    "LAKEFS_SECRET_ACCESS_KEY",
)

V1 = {
    "datasets/train_a.jsonl": b'{"prompt": "a", "completion": "1"}\n',
    "datasets/train_b.jsonl": b'{"prompt": "b", "completion": "2"}\n',
    "datasets/notes.txt": b"not training data\n",
    "datasets/eval/test.jsonl": b'{"prompt": "held out", "completion": "x"}\n',
    "datasets/more/train_c.jsonl": b'{"prompt": "c", "completion": "3"}\n',
    "datasets/more-2/train_d.jsonl": b'{"prompt": "d", "completion": "4"}\n',  # sorts after more/ folder-wise
    "datasets-old/train_z.jsonl": b'{"prompt": "z", "completion": "26"}\n',  # shares the prefix's first letters
    "README.md": b"# training data\n",
}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLakeFS]:
    """A fake lakeFS with REPO: main holds V1; the environment points at it."""
    fake = FakeLakeFS(ACCESS_KEY, SECRET_KEY).start()
    fake.create_repository(REPO)
    fake.commit(REPO, "main", dict(V1), "v1")
    for name in ALL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LAKEFS_ENDPOINT", fake.endpoint)
    monkeypatch.setenv("LAKEFS_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("LAKEFS_SECRET_KEY", SECRET_KEY)
    yield fake
    fake.stop()


def fetch(tmp_path: Path, ref: str = "main", prefix: str = "datasets", pattern: str = "*.jsonl") -> LakeFSSnapshot:
    return fetch_lakefs(REPO, ref, prefix, pattern, tmp_path / "cache")


def contents(snapshot: LakeFSSnapshot) -> dict[str, bytes]:
    return {obj: path.read_bytes() for obj, path in zip(snapshot.objects, snapshot.files)}


# ---- fetching


def test_fetch_from_branch_pins_the_commit_and_caches_by_commit(server: FakeLakeFS, tmp_path: Path) -> None:
    head = server.repos[REPO].branches["main"]
    snapshot = fetch(tmp_path)
    assert (snapshot.repository, snapshot.ref, snapshot.commit_id, snapshot.prefix) == (REPO, "main", head, "datasets")
    assert snapshot.objects == ["datasets/train_a.jsonl", "datasets/train_b.jsonl"]
    assert snapshot.files == sorted(snapshot.files)
    assert snapshot.files[0] == tmp_path / "cache" / REPO / head / "datasets" / "train_a.jsonl"
    assert contents(snapshot) == {p: V1[p] for p in snapshot.objects}
    assert snapshot.manifest_entry() == {"repository": REPO, "ref": "main", "commit_id": head, "prefix": "datasets"}
    # everything after resolving the ref reads at the commit id, never at the branch
    reads = [r for r in server.requests if "/refs/" in r.path]
    assert reads and all(f"/refs/{head}/" in r.path for r in reads)
    assert all(r.query.get("presign", "").lower() == "false" for r in server.object_reads())  # the SDK sends "False"


def test_tag_commit_id_and_short_commit_id_read_that_version(server: FakeLakeFS, tmp_path: Path) -> None:
    v1 = server.repos[REPO].branches["main"]
    server.create_tag(REPO, "v1.0", "main")
    server.commit(REPO, "main", {"datasets/train_a.jsonl": b'{"prompt": "a2", "completion": "1"}\n'}, "v2")
    for ref in ("v1.0", v1, v1[:12]):
        snapshot = fetch(tmp_path, ref=ref)
        assert snapshot.ref == ref and snapshot.commit_id == v1
        assert snapshot.files[0].read_bytes() == V1["datasets/train_a.jsonl"]
    assert fetch(tmp_path, ref="main").files[0].read_bytes() == b'{"prompt": "a2", "completion": "1"}\n'


def test_old_servers_that_echo_the_ref_as_commit_id_still_resolve(server: FakeLakeFS, tmp_path: Path) -> None:
    server.echo_ref_as_commit_id = True
    assert fetch(tmp_path).commit_id == server.repos[REPO].branches["main"]
    assert [r.query for r in server.requests if r.path.endswith("/refs/main/commits")] == [{"amount": "1"}]


@pytest.mark.parametrize(
    ("prefix", "pattern", "expected"),
    [
        ("datasets", "*.jsonl", ["datasets/train_a.jsonl", "datasets/train_b.jsonl"]),
        ("/datasets/", "train_b*", ["datasets/train_b.jsonl"]),
        (
            "datasets",
            "**/*.jsonl",
            [
                "datasets/more/train_c.jsonl",
                "datasets/more-2/train_d.jsonl",
                "datasets/train_a.jsonl",
                "datasets/train_b.jsonl",
            ],
        ),
        ("datasets", "more/*.jsonl", ["datasets/more/train_c.jsonl"]),
        ("datasets", "*", ["datasets/train_a.jsonl", "datasets/train_b.jsonl"]),  # notes.txt is not data
        (
            "",
            "**/train_*.jsonl",
            [
                "datasets/more/train_c.jsonl",
                "datasets/more-2/train_d.jsonl",
                "datasets/train_a.jsonl",
                "datasets/train_b.jsonl",
                "datasets-old/train_z.jsonl",
            ],
        ),
    ],
)
def test_prefix_and_pattern_select_files_and_eval_is_never_training_data(
    server: FakeLakeFS, tmp_path: Path, prefix: str, pattern: str, expected: list[str]
) -> None:
    assert fetch(tmp_path, prefix=prefix, pattern=pattern).objects == expected


@pytest.mark.parametrize("pattern", ["*.jsonl", "**/*.jsonl", "**/*", "*/*.jsonl", "train_[ab].jsonl", "eval/*", "**"])
def test_same_files_and_dataset_hash_as_the_local_source(server: FakeLakeFS, tmp_path: Path, pattern: str) -> None:
    """lakeFS and a local copy of the same tree give the same files in the same order, and the same hashes."""
    local_root = tmp_path / "local"
    for path, data in V1.items():
        if path.startswith("datasets/"):
            (local_root / path).parent.mkdir(parents=True, exist_ok=True)
            (local_root / path).write_bytes(data)
    try:
        local = find_training_files(str(local_root / "datasets"), pattern)
    except DataError:
        local = []
    try:
        snapshot = fetch(tmp_path, pattern=pattern)
        remote = fingerprint(snapshot.files, tmp_path / "cache" / REPO / snapshot.commit_id / snapshot.prefix)
    except DataError:
        remote = []
    assert bool(local) == (pattern not in ("eval/*", "**"))  # both sides match nothing only where they should
    cache_root = tmp_path / "cache" / REPO / server.repos[REPO].branches["main"]
    assert relative(remote, cache_root) == relative(local, local_root)
    assert [f.sha256 for f in remote] == [f.sha256 for f in local]
    assert dataset_sha256(remote) == dataset_sha256(local)


def relative(files: list[DataFile], root: Path) -> list[str]:
    return [f.path.relative_to(root).as_posix() for f in files]


def test_listing_follows_pagination(server: FakeLakeFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.commit(REPO, "main", {f"many/part-{i:02d}.jsonl": b"{}\n" for i in range(7)})
    monkeypatch.setattr(lakefs_source, "LIST_PAGE_SIZE", 3)
    snapshot = fetch(tmp_path, prefix="many")
    assert snapshot.objects == [f"many/part-{i:02d}.jsonl" for i in range(7)]
    listings = [r for r in server.requests if r.path.endswith("/objects/ls")]
    assert [r.query.get("after", "") for r in listings] == ["", "many/part-02.jsonl", "many/part-05.jsonl"]
    assert {r.query["amount"] for r in listings} == {"3"}


def test_large_and_empty_files_download_in_ranged_chunks(
    server: FakeLakeFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {
        "big/odd.jsonl": bytes(range(256)) * 3 + b"tail",  # not a multiple of the chunk
        "big/even.jsonl": b"0123456789" * 8,  # a multiple: the last read asks past the end
        "big/empty.jsonl": b"",
    }
    server.commit(REPO, "main", files)
    monkeypatch.setattr(lakefs_source, "DOWNLOAD_CHUNK", 16)
    snapshot = fetch(tmp_path, prefix="big")
    assert contents(snapshot) == files
    ranged = [r for r in server.object_reads() if r.query["path"] == "big/odd.jsonl"]
    assert len(ranged) == -(-len(files["big/odd.jsonl"]) // 16) and all("Range" in r.headers for r in ranged)


# ---- the cache


def test_second_fetch_reads_no_object_from_the_server(server: FakeLakeFS, tmp_path: Path) -> None:
    first = fetch(tmp_path)
    assert len(server.object_reads()) == 2
    server.requests.clear()
    second = fetch(tmp_path)
    assert second == first
    assert server.object_reads() == []


def test_a_damaged_cached_file_is_downloaded_again(server: FakeLakeFS, tmp_path: Path) -> None:
    first = fetch(tmp_path)
    first.files[0].write_bytes(b"truncated")
    server.requests.clear()
    assert contents(fetch(tmp_path)) == contents(first) | {first.objects[0]: V1[first.objects[0]]}
    assert [r.query["path"] for r in server.object_reads()] == [first.objects[0]]


def test_a_short_download_leaves_nothing_in_the_cache(server: FakeLakeFS, tmp_path: Path) -> None:
    def truncate_after_listing(request: Request) -> None:
        if request.path.endswith("/objects/ls"):  # the listing promised the full size
            head = server.repos[REPO].branches["main"]
            server.repos[REPO].commits[head].objects["datasets/train_b.jsonl"] = b"{"

    server.after_request.append(truncate_after_listing)
    with pytest.raises(LoraopsError, match=r"'datasets/train_b.jsonl': got 1 bytes, expected \d+"):
        fetch(tmp_path)
    cached = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert cached == ["train_a.jsonl"]  # complete files only: no partial train_b, no .part leftovers


def test_a_branch_moved_after_resolving_does_not_mix_versions(server: FakeLakeFS, tmp_path: Path) -> None:
    v1 = server.repos[REPO].branches["main"]
    v2_files = {
        "datasets/train_a.jsonl": b'{"prompt": "new", "completion": "v2"}\n',
        "datasets/train_new.jsonl": b"{}\n",
    }

    def move_main_once(request: Request) -> None:
        if "/commits/" in request.path and server.repos[REPO].branches["main"] == v1:
            server.commit(REPO, "main", v2_files, "v2 lands mid-fetch")

    server.after_request.append(move_main_once)
    snapshot = fetch(tmp_path)
    assert server.repos[REPO].branches["main"] != v1  # the branch did move during the fetch
    assert snapshot.commit_id == v1
    assert contents(snapshot) == {p: V1[p] for p in ("datasets/train_a.jsonl", "datasets/train_b.jsonl")}
    again = fetch(tmp_path)
    assert again.commit_id == server.repos[REPO].branches["main"]
    assert contents(again)["datasets/train_a.jsonl"] == v2_files["datasets/train_a.jsonl"]
    assert "datasets/train_new.jsonl" in again.objects


# ---- errors


def test_credential_aliases_are_accepted(server: FakeLakeFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAKEFS_ACCESS_KEY")
    monkeypatch.delenv("LAKEFS_SECRET_KEY")
    monkeypatch.setenv("LAKEFS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("LAKEFS_SECRET_ACCESS_KEY", SECRET_KEY)
    assert len(fetch(tmp_path).files) == 2


@pytest.mark.parametrize("missing", ["LAKEFS_ENDPOINT", "LAKEFS_ACCESS_KEY", "LAKEFS_SECRET_KEY"])
def test_missing_credentials_name_the_variable(
    server: FakeLakeFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.setenv(missing, "")
    with pytest.raises(LoraopsError) as excinfo:
        fetch(tmp_path)
    assert missing in str(excinfo.value)
    assert str(excinfo.value).count("LAKEFS_") <= 2  # names the missing one (and its alias), not the others
    assert server.requests == []


def test_all_credentials_missing_lists_every_variable(
    server: FakeLakeFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ALL_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(LoraopsError, match="LAKEFS_ENDPOINT, LAKEFS_ACCESS_KEY .*, LAKEFS_SECRET_KEY"):
        fetch(tmp_path)


@contextmanager
def refused_port() -> Iterator[int]:
    """A port that refuses connections: bound, so nothing else takes it, but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def use_refused_port(mp: pytest.MonkeyPatch, stack: ExitStack) -> None:
    mp.setenv("LAKEFS_ENDPOINT", f"http://127.0.0.1:{stack.enter_context(refused_port())}")


ERROR_CASES = {
    "bad credentials": (
        lambda mp, stack: mp.setenv("LAKEFS_SECRET_KEY", SECRET_KEY + "-wrong"),
        {},
        r"rejected the credentials from LAKEFS_ACCESS_KEY / LAKEFS_SECRET_KEY \(HTTP 401",
    ),
    "unknown repository": (
        None,
        {"repository": "no-such-repo"},
        r"lakeFS repository 'no-such-repo' not found at http://127\.0\.0\.1:\d+ \(HTTP 404",
    ),
    "unknown ref": (None, {"ref": "no-such-branch"}, r"has no branch, tag or commit 'no-such-branch' \(HTTP 404"),
    "unknown commit id": (None, {"ref": "0" * 64}, r"has no branch, tag or commit '0{64}'"),
    "invalid repository id": (None, {"repository": "../etc"}, r"'\.\./etc' is not a valid repository id"),
    "empty ref": (None, {"ref": ""}, r"lakeFS ref is empty"),
    "no matching files": (
        None,
        {"pattern": "*.parquet"},
        r"lakefs://training-data/[0-9a-f]{64}/datasets: no training "
        r"files match dataset_pattern '\*\.parquet' \(ref 'main'\)",
    ),
    "unreachable server": (
        use_refused_port,
        {},
        r"cannot reach lakeFS at http://127\.0\.0\.1:\d+ \(set by LAKEFS_ENDPOINT\)"
        r".*Connection refused",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_clear_and_never_reveal_the_secret(
    server: FakeLakeFS,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    setup, overrides, message = ERROR_CASES[case]
    caplog.set_level(logging.DEBUG)  # the SDK's and urllib3's debug logs included
    args = {"repository": REPO, "ref": "main", "prefix": "datasets", "pattern": "*.jsonl"} | overrides
    with ExitStack() as stack, pytest.raises(LoraopsError, match=message) as excinfo:
        if setup is not None:
            setup(monkeypatch, stack)
        fetch_lakefs(cache_dir=tmp_path / "cache", **args)
    if case == "no matching files":
        assert isinstance(excinfo.value, DataError)
    assert_secret_hidden(excinfo.value, caplog, capsys)


class QuietStaticFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


def test_an_endpoint_that_is_not_lakefs_is_named_as_the_problem(
    server: FakeLakeFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "www").mkdir()
    handler = functools.partial(QuietStaticFiles, directory=str(tmp_path / "www"))
    other = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # a web server that answers 404 pages in HTML
    threading.Thread(target=other.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        monkeypatch.setenv("LAKEFS_ENDPOINT", f"http://127.0.0.1:{other.server_address[1]}")
        with pytest.raises(LoraopsError, match="answered HTTP 404 without a lakeFS error: is LAKEFS_ENDPOINT"):
            fetch(tmp_path)
    finally:
        other.shutdown()
        other.server_close()


def test_a_server_that_never_answers_times_out(
    server: FakeLakeFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lakefs_source, "REQUEST_TIMEOUT", (0.2, 0.2))
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        monkeypatch.setenv("LAKEFS_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(LoraopsError, match=r"cannot reach lakeFS at .*timed out"):
            fetch(tmp_path)
    assert time.monotonic() - started < 5


def test_successful_fetch_logs_the_commit_but_never_the_secret(
    server: FakeLakeFS, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    snapshot = fetch(tmp_path)
    assert f"resolved to commit {snapshot.commit_id}" in caplog.text
    assert_secret_hidden(None, caplog, capsys)
    assert SECRET_KEY not in repr(lakefs_source.read_credentials())


def assert_secret_hidden(
    exc: BaseException | None, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither the secret nor the basic-auth token built from it, anywhere a user could see them."""
    token = base64.b64encode(f"{ACCESS_KEY}:{SECRET_KEY}".encode()).decode()
    out, err = capsys.readouterr()
    places = [caplog.text, out, err]
    if exc is not None:  # the whole chain, as a traceback would print it
        places += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for text in places:
        assert SECRET_KEY not in text and token not in text


def test_fake_server_config_endpoint_parses_with_the_sdk(server: FakeLakeFS) -> None:
    """The SDK probes GET /config for pre-sign support whenever pre_sign is not forced."""
    import lakefs

    client = lakefs.Client(host=server.endpoint, username=ACCESS_KEY, password=SECRET_KEY)
    assert client.version == "1.50.0-fake"
    assert client.storage_config.pre_sign_support is False
    ref = lakefs.repository(REPO, client=client).ref("main")
    with ref.object("datasets/train_a.jsonl").reader(mode="rb") as fd:
        assert fd.read() == V1["datasets/train_a.jsonl"]
