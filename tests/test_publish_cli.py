"""`loraops publish` from the command line: exit status 2 (never evaluated), 1 (not better), 0."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import CONFIGS, fake_metrics, finished_run

from loraops.cli import main


def no_verify_configs(tmp_path: Path) -> Path:
    """The shipped configs, without regenerating answers: fake metrics hold no real predictions."""
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    text = (configs / "compare.yaml").read_text()
    (configs / "compare.yaml").write_text(text.replace("verify_samples: 16", "verify_samples: 0"))
    return configs


def test_publish_exit_statuses(
    tmp_path: Path, tiny_adapter_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # compare.yaml's metrics and reference paths are relative to here
    run = finished_run(tmp_path, "r1", tiny_adapter_dir)
    args = ["publish", str(run), "--config-dir", str(no_verify_configs(tmp_path))]
    assert main(args) == 2
    assert "make eval" in capsys.readouterr().err

    metrics = tmp_path / "artifacts" / "metrics"
    fake_metrics(metrics, "baseline/default", {"test": 20.0})
    fake_metrics(metrics, "r1", {"test": 20.0})
    assert main(args) == 1
    assert "did not beat its reference" in capsys.readouterr().err
    assert not (tmp_path / "artifacts" / "models").exists()

    fake_metrics(metrics, "r1", {"test": 90.0})
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "verdict: IMPROVED" in out and "published: artifacts/models/r1 (adapter" in out
    assert json.loads((tmp_path / "artifacts" / "reference.json").read_text())["run"] == "r1"
    assert (tmp_path / "artifacts" / "models" / "r1" / "README.md").is_file()


def test_artifacts_dir_moves_metrics_reference_and_models_together(
    tmp_path: Path, tiny_adapter_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = finished_run(tmp_path, "r1", tiny_adapter_dir)
    elsewhere = tmp_path / "shared-artifacts"
    fake_metrics(elsewhere / "metrics", "baseline/default", {"test": 20.0})
    fake_metrics(elsewhere / "metrics", "r1", {"test": 90.0})
    assert (
        main(["publish", str(run), "--config-dir", str(no_verify_configs(tmp_path)), "--artifacts-dir", str(elsewhere)])
        == 0
    )
    assert json.loads((elsewhere / "reference.json").read_text())["run"] == "r1"
    assert (elsewhere / "models" / "r1" / "README.md").is_file()
    assert not (tmp_path / "artifacts").exists()  # nothing went to the default folder


def test_force_never_publishes_an_unevaluated_latest_it_was_not_named(
    tmp_path: Path, tiny_adapter_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    run = finished_run(tmp_path, "r1", tiny_adapter_dir)
    (tmp_path / "outputs" / "runs").mkdir(parents=True)
    shutil.move(run, tmp_path / "outputs" / "runs" / "r1")
    (tmp_path / "outputs" / "runs" / "latest").symlink_to("r1")
    configs = ["--config-dir", str(no_verify_configs(tmp_path))]
    assert main(["publish", "--force", *configs]) == 2
    err = capsys.readouterr().err
    assert "--force would publish the latest run, r1, which was never evaluated" in err and "name the run" in err
    assert not (tmp_path / "artifacts").exists()

    assert main(["publish", "outputs/runs/r1", "--force", *configs]) == 0  # named: the user means it
    out = capsys.readouterr().out
    assert "published with --force over: r1 was never compared with its reference" in out
