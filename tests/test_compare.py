"""`loraops compare`: verdict, exit status, reference selection and missing metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CONFIGS, make_run

from loraops.cli import main
from loraops.config import METRICS
from loraops.eval.records import MetricsRecords


def fake_run(root: Path, name: str, model_name: str = "default") -> Path:
    return make_run(root / "runs", name, model_name=model_name)


def fake_metrics(metrics_dir: Path, name: str, exact: dict[str, float]) -> None:
    records = MetricsRecords.of(metrics_dir, name)
    summary = {}
    for split, value in exact.items():
        metrics = {m: 0.5 for m in METRICS} | {"exact_match": value, "n": 10}
        records.write_split(split, {"split": split, "metrics": metrics}, [])
        summary[split] = metrics
    records.write_summary({"metrics": {**summary, "overall": {}}})


def run_compare(tmp_path: Path, run: Path, *extra: str) -> int:
    return main(["compare", "--config-dir", str(CONFIGS), f"run={run}", f"metrics_dir={tmp_path / 'm'}",
                 f"reference_file={tmp_path / 'reference.json'}", *extra])  # fmt: skip


def test_improvement_exits_0_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": 80.0, "dev": 70.0})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 0.0, "dev": 0.0})
    assert run_compare(tmp_path, run) == 0
    out = capsys.readouterr().out
    assert "verdict: IMPROVED on exact_match (test) against baseline/default" in out
    assert "+80" in out
    saved = json.loads((tmp_path / "m" / "r1" / "comparison.json").read_text())
    assert saved["improved"] and saved["reference_kind"] == "base"
    assert {(r["split"], r["metric"]) for r in saved["rows"]} == {(s, m) for s in ("test", "dev") for m in METRICS}


def test_no_improvement_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": 10.0})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 10.0})
    assert run_compare(tmp_path, run) == 1
    assert "NOT IMPROVED" in capsys.readouterr().out
    assert run_compare(tmp_path, run, "primary_metric=rouge1") == 1  # equal is not better
    fake_metrics(tmp_path / "m", "r1", {"test": 12.0})
    assert run_compare(tmp_path, run, "min_delta=5") == 1
    assert run_compare(tmp_path, run) == 0


def test_missing_reference_metrics_name_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": 80.0})
    assert run_compare(tmp_path, run) == 2
    assert "make eval-baseline" in capsys.readouterr().err
    assert run_compare(tmp_path, fake_run(tmp_path, "r2")) == 2
    assert "make eval" in capsys.readouterr().err
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 0.0})  # the reference alone is not enough
    assert run_compare(tmp_path, tmp_path / "runs" / "r2") == 2
    assert "no metrics for r2 on split 'test'" in capsys.readouterr().err


def test_reference_missing_a_secondary_split_is_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": 80.0, "adversarial": 40.0})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 0.0})
    assert run_compare(tmp_path, run) == 0
    out = capsys.readouterr().out
    assert "no metrics for split 'adversarial'; produce them with: make eval-baseline" in out
    assert "n/a" in out


def test_published_run_becomes_the_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "r2")
    fake_metrics(tmp_path / "m", "r2", {"test": 60.0})
    fake_metrics(tmp_path / "m", "r1", {"test": 80.0})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 0.0})
    assert run_compare(tmp_path, run, "against=published") == 2
    assert "no run has been published yet" in capsys.readouterr().err
    (tmp_path / "reference.json").write_text(json.dumps({"run": "r1"}))
    assert run_compare(tmp_path, run) == 1
    assert "r2 vs r1 (published)" in capsys.readouterr().out
    assert run_compare(tmp_path, run, "against=base") == 0


def test_the_published_run_itself_is_compared_with_the_base(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": 80.0})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 0.0})
    (tmp_path / "reference.json").write_text(json.dumps({"run": "r1"}))
    assert run_compare(tmp_path, run) == 0
    assert "r1 vs baseline/default (base)" in capsys.readouterr().out
    assert run_compare(tmp_path, run, "against=published") == 2
    assert "is itself the published reference" in capsys.readouterr().err
