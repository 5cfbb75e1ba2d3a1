"""A full disk (ENOSPC) in the middle of training or evaluation: the path and what was being written are named,
the run is recorded as failed, `latest` stays where it was, and nothing half-written is left to load."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from support import CONFIGS, write_jsonl

from loraops.cli import main
from loraops.config import TrainConfig, load_config
from loraops.runs import RunDir
from loraops.train import train


def no_space(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class FullDisk:
    """From the moment it fills, no new file can be made (as on a real full disk); files that exist can still
    be rewritten in the blocks they hold."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        real = tempfile.mkstemp

        def mkstemp(*args: Any, **kwargs: Any) -> Any:
            return no_space() if self.full else real(*args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)

    def fill_on(self, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
        def filled(*args: Any, **kwargs: Any) -> Any:
            self.full = True
            return no_space()

        monkeypatch.setattr(target, filled)


def test_a_full_disk_while_saving_the_adapter_names_it_and_fails_the_run(
    tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = train(load_config(TrainConfig, CONFIGS, "train", tiny_overrides + ["max_steps=1"])).run_dir
    disk = FullDisk(monkeypatch)
    disk.fill_on(monkeypatch, "peft.peft_model.safe_save_file")  # the adapter's weights, the biggest write
    assert main(["train", *tiny_overrides, "max_steps=1", "save_strategy=no"]) == 2
    err = capsys.readouterr().err
    runs = tmp_path / "runs"
    (failed,) = [p for p in runs.iterdir() if p.is_dir() and not p.is_symlink() and p != good]
    assert f"{failed / 'model'}: cannot write the trained adapter (No space left on device)" in err
    assert "the disk is full" in err and "Traceback" not in err
    # No new file could be made, yet the manifest no longer says `running`.
    manifest = RunDir(failed).read_manifest()
    assert manifest.status == "failed" and "No space left" in (manifest.error or "")
    assert (runs / "latest").resolve() == good.resolve()
    assert not (failed / "model").exists()  # nothing half-written for eval or publish to pick up
    assert not [p for p in failed.rglob(".*") if p.is_file()]  # no temporary files left behind


def test_a_full_disk_while_checkpointing_names_the_checkpoint(
    tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = FullDisk(monkeypatch)
    disk.fill_on(monkeypatch, "peft.peft_model.safe_save_file")
    assert main(["train", *tiny_overrides, "max_steps=2", "save_strategy=steps", "save_steps=1"]) == 2
    err = capsys.readouterr().err
    (failed,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert f"{failed / 'checkpoints'}" in err and "cannot write a checkpoint" in err and "Traceback" not in err
    assert RunDir(failed).read_manifest().status == "failed"
    assert not (tmp_path / "runs" / "latest").exists()


def test_a_full_disk_while_writing_eval_output_names_the_file(
    trained_run_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    eval_dir = tmp_path / "evalsets"
    write_jsonl(eval_dir / "test.jsonl", [{"prompt": "Rolling sum of A1:A5", "completion": "=FLOWROLL(A1:A5, 2)"}])
    metrics_before = RunDir(trained_run_copy).metrics_path.read_bytes()
    disk = FullDisk(monkeypatch)
    disk.full = True
    overrides = [f"model={trained_run_copy}", f"eval_dir={eval_dir}", f"metrics_dir={tmp_path / 'm'}"]
    assert main(["eval", "--config-dir", str(CONFIGS), *overrides, "max_new_tokens=4"]) == 2
    err = capsys.readouterr().err
    predictions = tmp_path / "m" / trained_run_copy.name / "test.predictions.jsonl"
    assert f"{predictions}: cannot write the test split's predictions (No space left on device)" in err
    assert "Traceback" not in err
    assert not [p for p in (tmp_path / "m").rglob("*") if p.is_file()]  # nothing half-written
    assert RunDir(trained_run_copy).metrics_path.read_bytes() == metrics_before
