"""Bad input of every family ends in one clear message and exit status 2, never a traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from support import CONFIGS, PC_RECORDS, fake_metrics, make_run, write_jsonl

from loraops.cli import main
from loraops.data.files import read_jsonl
from loraops.errors import DataError
from loraops.records import Manifest
from loraops.runs import RunDir

Run = Callable[..., str]


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run `loraops ARGS`, assert exit status 2 and no traceback; return what it printed (convert reports
    each failed file on stdout, then ends with the error line on stderr)."""

    def run(*args: str) -> str:
        assert main([*args]) == 2, capsys.readouterr()
        printed = capsys.readouterr()
        assert printed.err.strip().splitlines()[-1].startswith("loraops: error: ")
        assert "Traceback" not in printed.err + printed.out
        return printed.out + printed.err

    return run


def check_args(tiny_model_dir: Path, data: Path, *extra: str) -> list[str]:
    return ["check", "--config-dir", str(CONFIGS), f"model_name={tiny_model_dir}", f"dataset_path={data}", *extra]


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ('{"prompt": "broken \\ud800 text", "completion": "x"}', r"lone UTF-16 surrogate (\ud800)"),
        (
            json.dumps(
                {
                    "messages": [
                        {"role": "assistant", "content": "Hello!"},
                        {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "hi"},
                    ]
                }
            ),
            "starts with an assistant turn",
        ),
    ],
    ids=["deep-nesting", "lone-surrogate", "assistant-first"],
)
def test_bad_records(tmp_path: Path, tiny_model_dir: Path, run_cli: Run, line: str, fragment: str) -> None:
    (tmp_path / "train.jsonl").write_text(json.dumps(PC_RECORDS[0]) + "\n" + line + "\n")
    assert f"{tmp_path / 'train.jsonl'}:2: " in run_cli(*check_args(tiny_model_dir, tmp_path))
    assert fragment in run_cli(*check_args(tiny_model_dir, tmp_path))


def test_unreadable_file_names_itself(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read the file"):
        list(read_jsonl(tmp_path))  # a folder where a file should be; root reads any file, so no chmod here


@pytest.mark.parametrize("pattern", ["", "/etc/*.jsonl", "../*.jsonl"])
def test_bad_patterns(tmp_path: Path, tiny_model_dir: Path, run_cli: Run, pattern: str) -> None:
    assert "dataset_pattern=" in run_cli(*check_args(tiny_model_dir, tmp_path, f"dataset_pattern='{pattern}'"))
    assert "eval_pattern=" in run_cli("eval", "--config-dir", str(CONFIGS), f"eval_pattern='{pattern}'")


def test_bad_configs_and_models(tmp_path: Path, tiny_model_dir: Path, small_dataset: Path, run_cli: Run) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    (configs / "train.yaml").write_text((CONFIGS / "train.yaml").read_text() + "lr: [1,\n")
    assert "not valid YAML" in run_cli("check", "--config-dir", str(configs))
    for value in ("inf", "-inf", "nan"):
        assert f"lr={float(value)!r} must be a finite number" in run_cli(
            *check_args(tiny_model_dir, small_dataset, f"lr={value}")
        )
    assert "longer than the model's context (512 tokens" in run_cli(
        *check_args(tiny_model_dir, small_dataset, "max_length=1000")
    )
    broken = tmp_path / "model.gguf"
    broken.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 20)  # magic and version, then cut short
    assert f"{broken}: not a readable GGUF model" in run_cli(*check_args(broken, small_dataset))


def test_run_folder_problems_stop_before_training(tmp_path: Path, tiny_overrides: list[str], run_cli: Run) -> None:
    args = ["train", "--config-dir", str(CONFIGS), *tiny_overrides]
    (tmp_path / "a-file").write_text("")
    assert "is a file, not a folder" in run_cli(*args, f"output_dir={tmp_path / 'a-file'}")
    (tmp_path / "runs" / "latest").mkdir(parents=True)
    assert "is a real folder, not the link" in run_cli(*args)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["latest"]  # no run folder, no .latest.* link


def test_resume_from_broken_runs(tmp_path: Path, tiny_overrides: list[str], run_cli: Run) -> None:
    args = ["train", "--config-dir", str(CONFIGS), *tiny_overrides]
    run = RunDir(make_run(tmp_path / "old", "r1", status="failed"))
    run.manifest_path.write_text('{"status": "fail')
    assert "manifest.json: cannot read" in run_cli(*args, f"resume_from={run.path}")
    run.write_manifest(Manifest(status="failed"))
    (run.checkpoints_dir / "checkpoint-2").mkdir(parents=True)  # never completed: no trainer_state.json
    assert "no complete checkpoint" in run_cli(*args, f"resume_from={run.path}")
    run.config_path.unlink()
    assert "config_used.yaml is missing" in run_cli(*args, f"resume_from={run.path}")


def test_broken_adapters_and_records(tmp_path: Path, trained_run: Path, trained_run_copy: Path, run_cli: Run) -> None:
    path = trained_run_copy
    run = RunDir(path)
    eval_args = [
        "eval",
        "--config-dir",
        str(CONFIGS),
        f"model={path}",
        "limit=1",
        f"metrics_dir={tmp_path / 'm'}",
        f"eval_dir={trained_run.parent.parent / 'data' / 'eval'}",
    ]
    weights = run.model_dir / "adapter_model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[: len(original) // 2])
    assert "cannot load this adapter" in run_cli(*eval_args)
    weights.write_bytes(original)
    config = run.model_dir / "adapter_config.json"
    config.write_text("{broken")
    assert "adapter_config.json" in run_cli(*eval_args)
    run.config_path.write_text("lr: 1\n")
    assert "no model_name" in run_cli(*eval_args, "baseline=true")

    compare_args = [
        "compare",
        "--config-dir",
        str(CONFIGS),
        f"run={path}",
        f"metrics_dir={tmp_path / 'm'}",
        f"reference_file={tmp_path / 'reference.json'}",
    ]
    run.config_path.write_text("model_name: default\n")
    fake_metrics(tmp_path / "m", run.name, {"test": 50.0})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 10.0})
    (tmp_path / "reference.json").write_text("[]")
    assert "reference.json: expected a JSON object" in run_cli(*compare_args)
    (tmp_path / "reference.json").unlink()
    (tmp_path / "m" / run.name / "test.json").write_text("{")
    assert "test.json: cannot read" in run_cli(*compare_args)
    (tmp_path / "m" / run.name / "summary.json").write_text("\x00")
    assert "summary.json: cannot read" in run_cli(*compare_args)


def _export(mapping: object = None, parts: object = None) -> list[dict[str, object]]:
    message = {"author": {"role": "user"}, "content": {"content_type": "text", "parts": parts or ["hi"]}}
    nodes = {"a": {"id": "a", "message": message, "parent": None, "children": []}}
    return [{"title": "t", "mapping": nodes if mapping is None else mapping, "current_node": "a"}]


@pytest.mark.parametrize(
    ("export", "fragment"),
    [
        (_export(mapping=["not", "an", "object"]), "`mapping` must be an object, got a list"),
        (_export(parts="a string"), "`message.content.parts` must be a list or null, got a string"),
        (_export(mapping={"a": 7}), "`mapping.a` must be an object, got a number"),
    ],
    ids=["mapping-list", "parts-string", "node-number"],
)
def test_convert_export_of_the_wrong_shape(tmp_path: Path, run_cli: Run, export: object, fragment: str) -> None:
    (tmp_path / "conversations.json").write_text(json.dumps(export))
    err = run_cli("convert", str(tmp_path))
    assert "conversations.json: failed (conversation 0 of the ChatGPT export: " in err and fragment in err


def test_convert_never_overwrites_what_it_did_not_write(
    tmp_path: Path, run_cli: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    source, output = tmp_path / "pairs.json", tmp_path / "pairs.converted.jsonl"
    source.write_text(json.dumps(PC_RECORDS[:2], indent=2))
    output.write_text("my own notes\n")
    assert "exists and was not written by `loraops convert`" in run_cli("convert", str(tmp_path))
    assert output.read_text() == "my own notes\n"
    output.unlink()
    assert main(["convert", str(tmp_path)]) == 0
    output.write_bytes(output.read_bytes() + b'{"prompt": "hand-edited", "completion": "\xff"}\n')
    source.write_text(json.dumps(PC_RECORDS[:3], indent=2))
    assert "or was edited since" in run_cli("convert", str(tmp_path))
    output.unlink()
    output.mkdir()
    assert "is in the way (not a file)" in run_cli("convert", str(tmp_path))
    output.rmdir()
    assert main(["convert", str(tmp_path)]) == 0 and len(output.read_text().splitlines()) == 3
    source.write_text(json.dumps(PC_RECORDS[:4], indent=2))
    assert main(["convert", str(tmp_path)]) == 0 and len(output.read_text().splitlines()) == 4  # its own: rewritten
    capsys.readouterr()
    (tmp_path / "out-file").write_text("")
    assert "is a file, not a folder" in run_cli("convert", str(tmp_path), "--output-dir", str(tmp_path / "out-file"))


def test_convert_unreadable_source(tmp_path: Path, run_cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pairs.json").write_text(json.dumps(PC_RECORDS[:2]))

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)  # root reads every file, so chmod cannot show this
    assert "pairs.json: failed (cannot read the file: Permission denied)" in run_cli("convert", str(tmp_path))


def test_duplicates_and_eval_overlap_are_counted(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(
        tmp_path / "train.jsonl",
        [*PC_RECORDS, PC_RECORDS[0], {**PC_RECORDS[1], "prompt": " " + PC_RECORDS[1]["prompt"]}],
    )
    write_jsonl(tmp_path / "eval" / "test.jsonl", PC_RECORDS[5:7])
    assert main(check_args(tiny_model_dir, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "duplicate records (whitespace aside): 2" in out
    assert "eval split 'test': 2 of 2 prompts are training prompts, 2 near duplicates" in out


def test_a_base_model_with_truncated_weights_is_named(tmp_path: Path, tiny_model_dir: Path, run_cli: Run) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an interrupted download
    write_jsonl(tmp_path / "data" / "train.jsonl", PC_RECORDS)
    args = ["train", "--config-dir", str(CONFIGS), f"model_name={broken}", f"dataset_path={tmp_path / 'data'}"]
    out = run_cli(*args, f"output_dir={tmp_path / 'runs'}", "max_steps=1")
    assert f"cannot load model '{broken}': a weights file is damaged or incomplete" in out
