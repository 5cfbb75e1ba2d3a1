"""Run folders: layout, records, finding a run, the `latest` link, and secret redaction."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest
from support import make_run

from loraops.errors import LoraopsError
from loraops.records import Manifest, RunMetrics
from loraops.runs import RUN_FILE_ENV, RunDir, find_run
from loraops.secrets import REDACTED, redact, scrub


def test_runs_started_in_the_same_second_do_not_clash(tmp_path: Path) -> None:
    now = datetime(2026, 1, 2, 3, 4, 5)
    names = [RunDir.create(tmp_path, now).name for _ in range(3)]
    assert names == ["2026-01-02_03-04-05", "2026-01-02_03-04-05_2", "2026-01-02_03-04-05_3"]


def test_latest_is_a_relative_link_switched_in_place(tmp_path: Path) -> None:
    first, second = RunDir.create(tmp_path), RunDir.create(tmp_path)
    first.mark_latest()
    link = second.mark_latest()
    assert link.is_symlink() and os.readlink(link) == second.name
    assert link.resolve() == second.path.resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name, "latest"])


def test_records_round_trip_and_config_snapshot_is_redacted(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path)
    assert run.status() is None and run.read_metrics() == RunMetrics() and run.records() == []
    run.write_config({"model_name": "default", "lr": 0.1, "hub_token": "hf_SomethingSecret"})
    run.write_manifest(Manifest(status="running", model_name="default"))
    assert run.status() == "running" and not run.is_finished()
    run.write_manifest(Manifest(status="failed", model_name="default", error="RuntimeError('x')"))
    assert run.read_manifest() == Manifest(status="failed", model_name="default", error="RuntimeError('x')")
    run.write_metrics(RunMetrics(global_steps=7))
    assert run.record_eval({"test": {"exact_match": 50.0, "n": 2}}) == 7
    assert run.read_metrics() == RunMetrics(global_steps=7, eval={"test": {"exact_match": 50.0, "n": 2}})
    assert type(run.read_metrics().eval["test"]["n"]) is int  # counts stay whole in the record
    assert run.base_model() == "default" and run.read_config()["hub_token"] == REDACTED
    assert [p.name for p in run.records()] == ["config_used.yaml", "metrics.json", "manifest.json"]


def test_broken_records_are_user_errors(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path)
    run.manifest_path.write_text("{not json")
    with pytest.raises(LoraopsError, match="manifest.json: cannot read"):
        run.status()
    with pytest.raises(LoraopsError, match="config_used.yaml is missing"):
        run.base_model()
    run.config_path.write_text("lr: 1\n")
    with pytest.raises(LoraopsError, match="no model_name"):
        run.base_model()


def test_find_run_by_path_latest_name_or_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_run(tmp_path / "outputs" / "runs", "2026-01-01_00-00-00")
    RunDir(path).mark_latest()
    monkeypatch.chdir(tmp_path)
    for spec in (str(path), "outputs/runs/latest", "2026-01-01_00-00-00", "latest"):
        run, adapter = find_run(spec)
        assert run == RunDir(path.resolve()) and adapter == path.resolve() / "model", spec
    (path / "model" / "adapter_config.json").write_text("{}")
    assert find_run(str(path / "model")) == (RunDir(path.resolve()), path.resolve() / "model")
    assert find_run("no-such-run") == (None, None)
    (tmp_path / "stray").mkdir()
    with pytest.raises(LoraopsError, match="neither a run folder"):
        find_run(str(tmp_path / "stray"))


def test_announce_writes_the_run_path_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = RunDir.create("outputs/runs")
    monkeypatch.delenv(RUN_FILE_ENV, raising=False)
    run.announce()
    assert not (tmp_path / "run-file").exists()
    monkeypatch.setenv(RUN_FILE_ENV, str(tmp_path / "run-file"))
    run.announce()
    assert (tmp_path / "run-file").read_text() == f"outputs/runs/{run.name}\n"  # relative to the project


def test_secret_looking_keys_are_redacted_and_values_scrubbed() -> None:
    cfg = {
        "lr": 1,
        "hf_token": "hf_abc",
        "remote": {"SECRET_KEY": "s", "host": "h"},
        "items": [{"api_key": "k"}],
        "max_new_tokens": 64,
    }  # counts tokens: not a secret
    assert redact(cfg) == {
        "lr": 1,
        "hf_token": REDACTED,
        "remote": {"SECRET_KEY": REDACTED, "host": "h"},
        "items": [{"api_key": REDACTED}],
        "max_new_tokens": 64,
    }
    assert scrub("token abc123 in abc123", ["abc123", None, ""]) == f"token {REDACTED} in {REDACTED}"


def test_a_run_config_reads_back_whatever_this_machine_has_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    run = RunDir(make_run(tmp_path, "r1", config={"tracking": "mlflow", "lr": 1e-3, "a_key_from_an_older_loraops": 1}))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # trained on a server with MLflow; read here without it
    assert run.train_config().tracking == "mlflow" and run.train_config().lr == 1e-3
