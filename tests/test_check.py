"""`loraops check`: the report on the sample data, truncation and masking counts, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONFIGS, REPO, write_jsonl

from loraops.check import check, format_report
from loraops.cli import main
from loraops.config import TrainConfig, load_config


def sample_config(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, CONFIGS, "train", [f"dataset_path={REPO / 'data'}", *overrides])


def test_report_on_sample_data(default_model_dir: Path) -> None:
    report = check(sample_config())
    assert len(report.files) == 3 and sum(sum(c.values()) for c in report.files.values()) == len(report.lengths)
    formats = {fmt for counts in report.files.values() for fmt in counts}
    assert formats == {"messages", "prompt_completion", "instruction"}
    assert report.truncated == 0 and report.all_masked == 0
    assert 0 < report.trained_tokens < report.tokens
    text = format_report(report)
    for fragment in ("records per file and format:", "tokens per example: min", "p95", "truncated at max_length=256: 0",
                     "all labels masked (would be dropped): 0", "trained (assistant) tokens:"):  # fmt: skip
        assert fragment in text
    # the answer and its end-of-turn token are trained; the prompt and system text are not
    assert '<|im_start|>assistant\n[[=GAPFILL(H4:H28, "mean")<|im_end|>]]' in report.example
    assert "[[" not in report.example.split("<|im_start|>assistant")[0]


def test_truncation_and_masking_are_counted(default_model_dir: Path) -> None:
    report = check(sample_config("max_length=60"))
    assert report.truncated > 0 and report.all_masked > 0
    assert report.all_masked <= report.truncated
    assert max(report.lengths) > 60  # lengths are reported before truncation


def test_check_exits_2_on_bad_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}, {"messages": [{"role": "user", "content": "x"}]}])
    assert main(["check", "--config-dir", str(CONFIGS), f"dataset_path={tmp_path}"]) == 2
    assert f"{tmp_path / 'd.jsonl'}:2: the conversation has no assistant turn" in capsys.readouterr().err


def test_check_cli_prints_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}, {"prompt": "q", "completion": "d"}])
    assert main(["check", "--config-dir", str(CONFIGS), f"dataset_path={tmp_path}", "--example", "1"]) == 0
    out = capsys.readouterr().out
    assert f"example {tmp_path / 'd.jsonl'}:2 (prompt_completion)" in out and "[[d<|im_end|>]]" in out
