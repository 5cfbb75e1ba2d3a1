"""tracking=mlflow against a real MLflow tracking server (SQLite backend, proxied artifacts) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tracking_sequence import (
    CANARY,
    check_champion,
    check_sequence,
    client,
    closed_port,
    evaluated_answers,
    run_sequence,
)

from loraops.runs import RunDir


@pytest.fixture
def mlflow_server(tmp_path: Path, empty_store: Path) -> Iterator[str]:
    """`mlflow server` on a free port, its database a copy of a migrated empty one; stopped afterwards."""
    root = tmp_path / "server"
    root.mkdir()
    shutil.copyfile(empty_store, root / "mlflow.db")
    port = closed_port()
    command = [
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
    with _mlflow(command, f"http://127.0.0.1:{port}", "/health", root / "server.log", {}) as url:
        yield url


@contextmanager
def _mlflow(arguments: list[str], url: str, health: str, log_file: Path, env: dict[str, str]) -> Iterator[str]:
    """`mlflow <arguments>` serving `url`, once `health` answers 200; stopped with everything it started."""
    bin_dir = str(Path(sys.executable).parent)  # `mlflow models serve` runs uvicorn from PATH
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{bin_dir}:{os.environ['PATH']}", **env}
    with open(log_file, "wb") as log:
        server = subprocess.Popen(
            [f"{bin_dir}/mlflow", *arguments], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_healthy(server, url + health, log_file)
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
            pytest.fail(f"mlflow exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"mlflow did not answer {url}:\n{log.read_text()[-3000:]}")


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


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

    # The champion served by MLflow itself answers each test prompt as eval did.
    port = closed_port()
    name = f"loraops-{Path(RunDir(seq.run).base_model()).name}"
    serve = ["models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local", "-h", "127.0.0.1"]
    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    with _mlflow([*serve, "-p", str(port)], f"http://127.0.0.1:{port}", "/ping", tmp_path / "serve.log", env) as url:
        for messages, prediction in evaluated_answers(seq):
            [answer] = _post(f"{url}/invocations", {"messages": messages, "max_tokens": 4})
            assert answer["choices"][0]["message"]["content"].strip() == prediction.strip(), messages
    assert not (project / "mlruns").exists()  # nothing in an embedded store: all of it went to the server
    served = tmp_path / "server" / "artifacts"
    assert list(served.rglob("adapter_model.safetensors")) and list(served.rglob("comparison.json"))
    for path in [tmp_path / "server" / "mlflow.db", *served.rglob("*")]:
        assert not path.is_file() or CANARY.encode() not in path.read_bytes(), path
