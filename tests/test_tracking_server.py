"""tracking=mlflow against a real MLflow tracking server (SQLite backend, proxied artifacts) on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tracking_sequence import CANARY, check_champion, check_sequence, client, closed_port, run_sequence


@pytest.fixture
def mlflow_server(tmp_path: Path, empty_store: Path) -> Iterator[str]:
    """`mlflow server` on a free port, its database a copy of a migrated empty one; stopped afterwards."""
    root = tmp_path / "server"
    root.mkdir()
    shutil.copyfile(empty_store, root / "mlflow.db")
    port = closed_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(root / "server.log", "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(server, url, root / "server.log")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _wait_healthy(server: subprocess.Popen[bytes], url: str, log: Path) -> None:
    for _ in range(600):
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"mlflow server did not answer /health:\n{log.read_text()[-3000:]}")


@pytest.mark.slow  # a server start and a whole pipeline: about a minute on 2 CPU cores
def test_sequence_against_a_tracking_server(
    mlflow_server: str, tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("HF_TOKEN", CANARY)
    seq = run_sequence(tmp_path, tiny_overrides)
    mlflow = client(mlflow_server)
    tracked = check_sequence(mlflow, seq)
    check_champion(mlflow, seq, tracked)
    assert not (project / "mlruns").exists()  # nothing in an embedded store: all of it went to the server
    served = tmp_path / "server" / "artifacts"
    assert list(served.rglob("adapter_model.safetensors")) and list(served.rglob("comparison.json"))
    for path in [tmp_path / "server" / "mlflow.db", *served.rglob("*")]:
        assert not path.is_file() or CANARY.encode() not in path.read_bytes(), path
