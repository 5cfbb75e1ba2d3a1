"""`loraops check`: the report on the sample data, truncation and masking counts, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import CONFIGS, REPO, write_jsonl

from loraops.check import check, format_report
from loraops.cli import main
from loraops.config import TrainConfig, load_config
from loraops.train import train


def sample_config(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, CONFIGS, "train", [f"dataset_path={REPO / 'data'}", *overrides])


def test_report_on_sample_data(default_model_dir: Path) -> None:
    report = check(sample_config(), example_index=48)  # the first DSL record, after the 48 general ones
    stats = report.stats
    assert len(stats.files) == 4 and sum(sum(c.values()) for c in stats.files.values()) == stats.records
    formats = {fmt for counts in stats.files.values() for fmt in counts}
    assert formats == {"messages", "prompt_completion", "instruction"}
    assert stats.truncated == 0 and stats.dropped_all_masked == 0 and stats.examples == stats.records
    assert 0 < stats.trained_tokens < stats.tokens
    assert stats.lengths["min"] <= stats.lengths["median"] <= stats.lengths["p95"] <= stats.lengths["max"]
    text = format_report(report)
    for fragment in (
        "records per file and format:",
        "tokens per example: min",
        "p95",
        "truncated at max_length=256: 0",
        "all labels masked (dropped): 0",
        "trained (assistant) tokens:",
    ):
        assert fragment in text
    assert report.validation is not None and report.validation.records == 32  # data/eval/dev.jsonl
    assert f"validation: 32 records from {REPO / 'data' / 'eval' / 'dev.jsonl'}; 32 examples" in text
    # the answer and its end-of-turn token are trained; the prompt and system text are not
    assert '<|im_start|>assistant\n[[=GAPFILL(H4:H28, "mean")<|im_end|>]]' in report.example
    assert "[[" not in report.example.split("<|im_start|>assistant")[0]


def test_report_counts_held_out_validation(default_model_dir: Path) -> None:
    everything = check(sample_config()).stats.records
    report = check(sample_config("val_fraction=0.1"))
    assert report.validation is not None and report.stats.records + report.validation.records == everything
    assert "validation: " in format_report(
        report
    ) and "held out from the training files (val_fraction=0.1)" in format_report(report)
    assert "validation: none" in format_report(check(sample_config("val_path=null")))


def test_truncation_and_masking_are_counted(default_model_dir: Path) -> None:
    stats = check(sample_config("max_length=60")).stats
    assert stats.truncated > 0 and stats.dropped_all_masked > 0
    assert stats.dropped_all_masked <= stats.truncated
    assert stats.examples == stats.records - stats.dropped_all_masked
    assert stats.lengths["max"] > 60  # lengths are reported before truncation


def test_check_and_train_count_the_same(tiny_overrides: list[str], small_dataset: Path) -> None:
    """One data step: the counts `check` shows are the ones training records, dropped examples included."""
    long = {"prompt": "word " * 80, "completion": "lost to truncation"}
    write_jsonl(small_dataset / "long.jsonl", [long, long])
    cfg = load_config(TrainConfig, CONFIGS, "train", [*tiny_overrides, "max_length=48", "max_steps=1"])
    checked = check(cfg).stats.as_dict()
    trained = train(cfg).metrics.data
    assert checked["dropped_all_masked"] == 2 and checked == trained


def test_example_index_out_of_range_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}])
    for index in ("-1", "1"):
        assert main(["check", "--config-dir", str(CONFIGS), f"dataset_path={tmp_path}", "--example", index]) == 2
        assert "the data has examples 0 to 0" in capsys.readouterr().err


def test_check_exits_2_on_bad_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(
        tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}, {"messages": [{"role": "user", "content": "x"}]}]
    )
    assert main(["check", "--config-dir", str(CONFIGS), f"dataset_path={tmp_path}"]) == 2
    assert f"{tmp_path / 'd.jsonl'}:2: the conversation has no assistant turn" in capsys.readouterr().err


def test_check_cli_prints_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}, {"prompt": "q", "completion": "d"}])
    assert main(["check", "--config-dir", str(CONFIGS), f"dataset_path={tmp_path}", "--example", "1"]) == 0
    out = capsys.readouterr().out
    assert f"example {tmp_path / 'd.jsonl'}:2 (prompt_completion)" in out and "[[d<|im_end|>]]" in out
