"""Training and `check` with data_source.type=lakefs, against the fake lakeFS server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from lakefs_server import FakeLakeFS
from support import CONFIGS, PC_RECORDS

from loraops.cli import main
from loraops.config import TrainConfig, load_config
from loraops.errors import ConfigError
from loraops.runs import RunDir
from loraops.train import train

ACCESS_KEY, SECRET_KEY = "AKIALORAOPSTEST01", "lakefs-Secret-Sentinel-31337"


@pytest.fixture
def lakefs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeLakeFS]:
    fake = FakeLakeFS(ACCESS_KEY, SECRET_KEY).start()
    fake.create_repository("dsl-data")
    body = "".join(json.dumps(r) + "\n" for r in PC_RECORDS).encode()
    fake.commit("dsl-data", "main", {"sft/train.jsonl": body, "sft/eval/test.jsonl": b'{"prompt": "x"}\n'}, "v1")
    monkeypatch.setenv("LAKEFS_ENDPOINT", fake.endpoint)
    monkeypatch.setenv("LAKEFS_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("LAKEFS_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("LORAOPS_CACHE_DIR", str(tmp_path / "cache"))
    yield fake
    fake.stop()


LAKEFS = ["data_source.type=lakefs", "data_source.repository=dsl-data", "data_source.ref=main", "data_source.path=sft"]


def test_train_from_lakefs_records_the_commit(
    lakefs: FakeLakeFS, tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config(TrainConfig, CONFIGS, "train", tiny_overrides + LAKEFS + ["max_steps=2"])
    run = train(cfg).run_dir
    source = RunDir(run).read_manifest().as_dict()["data"]
    head = lakefs.repos["dsl-data"].branches["main"]
    assert source["source"] == {
        "type": "lakefs",
        "repository": "dsl-data",
        "ref": "main",
        "commit_id": head,
        "prefix": "sft",
        "dataset_pattern": "*",
    }
    assert [f["name"] for f in source["files"]] == ["train.jsonl"] and len(source["files"][0]["sha256"]) == 64
    assert len(source["dataset_sha256"]) == 64
    recorded = [p.read_bytes() for p in run.rglob("*") if p.is_file()] + [capsys.readouterr().err.encode()]
    assert not any(SECRET_KEY.encode() in blob for blob in recorded)


def test_check_reads_lakefs_too(lakefs: FakeLakeFS, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config-dir", str(CONFIGS), f"model_name={tiny_model_dir}", *LAKEFS]) == 0
    assert "train.jsonl: 16 (16 prompt_completion)" in capsys.readouterr().out


def test_lakefs_needs_a_repository_and_credentials(
    lakefs: FakeLakeFS, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="data_source.repository"):
        load_config(TrainConfig, CONFIGS, "train", ["data_source.type=lakefs"])
    monkeypatch.delenv("LAKEFS_SECRET_KEY")
    assert main(["check", "--config-dir", str(CONFIGS), f"model_name={tiny_model_dir}", *LAKEFS]) == 2
    assert "LAKEFS_SECRET_KEY" in capsys.readouterr().err
