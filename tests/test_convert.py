"""`loraops convert`: pretty-printed JSON, ChatGPT export trees, idempotence, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import write_jsonl

from loraops.cli import main
from loraops.data.convert import convert_file, convert_folder
from loraops.data.sources import find_training_files, load_examples
from loraops.errors import DataError


def node(
    node_id: str,
    parent: str | None,
    children: list[str],
    role: str | None = None,
    parts: list[Any] | None = None,
    content_type: str = "text",
    recipient: str = "all",
    hidden: bool = False,
) -> dict[str, Any]:
    message = None
    if role is not None:
        message = {
            "id": node_id,
            "author": {"role": role, "name": None, "metadata": {}},
            "content": {"content_type": content_type, "parts": parts if parts is not None else []},
            "status": "finished_successfully",
            "recipient": recipient,
            "weight": 1.0,
            "metadata": {"is_visually_hidden_from_conversation": True} if hidden else {},
        }
    return {"id": node_id, "message": message, "parent": parent, "children": children}


def export_conversation() -> dict[str, Any]:
    """A real-shaped conversation: hidden system prompt, an edited question, a regenerated answer,
    a Python tool call, a browsing detour, and an image upload."""
    nodes = [
        node("root", None, ["sys"]),
        node("sys", "root", ["u1-old", "u1"], "system", [""], hidden=True),
        node("u1-old", "sys", ["a1-old"], "user", ["What is FLOWROLL? (typo)"]),
        node("a1-old", "u1-old", [], "assistant", ["Old answer on the edited-away branch."]),
        node("u1", "sys", ["a1-first", "a1"], "user", ["What is FLOWROLL?"]),
        node("a1-first", "u1", [], "assistant", ["First answer, regenerated away."]),
        node("a1", "u1", ["call"], "assistant", ["A rolling sum."]),
        node("call", "a1", ["out"], "assistant", ["print(1+1)"], content_type="code", recipient="python"),
        node("out", "call", ["a1b"], "tool", ["2"], content_type="execution_output"),
        node("a1b", "out", ["u2"], "assistant", ["Computed: 2."]),
        node(
            "u2",
            "a1b",
            ["browse"],
            "user",
            [{"content_type": "image_asset_pointer", "asset_pointer": "file-x"}, "What is in this picture?"],
        ),
        node("browse", "u2", ["quote"], "assistant", ['search("x")'], content_type="code", recipient="browser"),
        node("quote", "browse", ["a2"], "tool", ["results"], content_type="tether_browsing_display"),
        node("a2", "quote", [], "assistant", ["A spreadsheet."]),
    ]
    return {"title": "DSL chat", "conversation_id": "c1", "current_node": "a2", "mapping": {n["id"]: n for n in nodes}}


def unanswered_conversation() -> dict[str, Any]:
    nodes = [node("r", None, ["u"]), node("u", "r", ["a"], "user", ["hello?"]), node("a", "u", [], "assistant", [""])]
    return {"title": "no reply", "conversation_id": "c2", "current_node": "a", "mapping": {n["id"]: n for n in nodes}}


def test_chatgpt_export_follows_the_current_branch(tmp_path: Path) -> None:
    src = tmp_path / "conversations.json"
    src.write_text(json.dumps([export_conversation(), unanswered_conversation()], indent=2))
    report = convert_file(src, tmp_path)
    assert report.action == "converted" and report.records == 1
    record = json.loads(report.output.read_text().splitlines()[0])  # type: ignore[union-attr]
    assert record["messages"] == [
        {"role": "user", "content": "What is FLOWROLL?"},
        {"role": "assistant", "content": "A rolling sum.\n\nComputed: 2."},
        {"role": "user", "content": "What is in this picture?"},
        {"role": "assistant", "content": "A spreadsheet."},
    ]
    assert record["conversation_id"] == "c1"
    counts = report.counts
    assert counts["dropped off-branch nodes (edits, regenerations)"] == 3  # an edit (2 nodes), a regeneration
    assert counts["dropped hidden system messages"] == 1
    assert counts["dropped tool messages"] == 2
    assert counts["dropped browsing and tool-call messages"] == 2
    assert counts["dropped non-text parts (images, files)"] == 1
    assert counts["skipped conversations without an assistant reply"] == 1
    load_examples(find_training_files(str(tmp_path), "*.jsonl"), "auto")  # the output trains as is


def test_pretty_printed_json_shapes(tmp_path: Path) -> None:
    records = [{"prompt": "p1", "completion": "c1"}, {"instruction": "i", "output": "o"}]
    (tmp_path / "one.json").write_text(json.dumps(records[0], indent=4))
    (tmp_path / "array.json").write_text(json.dumps(records, indent=2))
    (tmp_path / "stream.jsonl").write_text("\n".join(json.dumps(r, indent=2) for r in records))
    reports = {r.path.name: r for r in convert_folder(tmp_path)}
    assert reports["one.json"].records == 1 and reports["array.json"].records == 2
    assert reports["stream.jsonl"].records == 2 and "move the source" in reports["stream.jsonl"].reason
    lines = (tmp_path / "array.converted.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records


def test_valid_jsonl_is_left_alone_and_rerun_is_idempotent(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [{"prompt": "p", "completion": "c"}])
    before = good.read_bytes()
    (tmp_path / "conversations.json").write_text(json.dumps([export_conversation()]))
    first = {r.path.name: r.action for r in convert_folder(tmp_path)}
    assert first == {"conversations.json": "converted", "good.jsonl": "skipped"}
    out = tmp_path / "conversations.converted.jsonl"
    stamp = out.stat().st_mtime_ns
    second = {r.path.name: r.action for r in convert_folder(tmp_path)}
    assert second == {
        "conversations.converted.jsonl": "skipped",
        "conversations.json": "up to date",
        "good.jsonl": "skipped",
    }
    assert out.stat().st_mtime_ns == stamp and good.read_bytes() == before


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ('{\n  "prompt": "p",\n  "completion": \n}', 4, "invalid JSON"),
        ('[\n  {"prompt": "p", "completion": "c"},\n  {"prompt": "p"}\n]', 3, "cannot tell the format"),
        ('{"prompt": "p", "completion": "c"}\n\n{\n "messages": [{"role": "robot", "content": "x"}]\n}', 3, "'robot'"),
    ],
)
def test_bad_json_names_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    src = tmp_path / "bad.json"
    src.write_text(text)
    with pytest.raises(DataError) as err:
        convert_file(src, tmp_path)
    assert err.value.line == line and fragment in str(err.value)
    assert not (tmp_path / "bad.converted.jsonl").exists()


def trailing_question_conversation() -> dict[str, Any]:
    """Answered once, then asked again with no reply (the chat was abandoned): the last question is trimmed."""
    nodes = [
        node("r", None, ["u1"]),
        node("u1", "r", ["a1"], "user", ["first?"]),
        node("a1", "u1", ["u2"], "assistant", ["answer"]),
        node("u2", "a1", [], "user", ["and then?"]),
    ]
    return {"title": "abandoned", "conversation_id": "c3", "current_node": "u2", "mapping": {n["id"]: n for n in nodes}}


def dataset_registry() -> dict[str, Any]:
    """LLaMA-Factory's dataset_info.json: dataset names mapped to where and how to read them."""
    return {
        "alpaca_en": {
            "file_name": "alpaca_en.json",
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        },
        "chats": {"file_name": "chats.json", "formatting": "sharegpt", "columns": {"messages": "conversations"}},
    }


def test_cli_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "conversations.json").write_text(json.dumps([export_conversation(), unanswered_conversation()]))
    assert main(["convert", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "conversations.json: converted (ChatGPT export)" in out and "1 skipped conversations" in out


def test_cli_convert_reports_each_file_and_fails_at_the_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "conversations.json").write_text(json.dumps([export_conversation()], indent=2))
    (tmp_path / "broken.json").write_text('[\n  {"prompt": "p", "completion": "c"},\n  {"prompt": \n]')
    (tmp_path / "dataset_info.json").write_text(json.dumps(dataset_registry(), indent=2))
    assert main(["convert", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "conversations.json: converted (ChatGPT export)" in captured.out  # sorted after broken.json, still done
    assert f"{tmp_path / 'broken.json'}:4: failed (invalid JSON" in captured.out
    assert "dataset_info.json: skipped (not data: a dataset registry" in captured.out
    assert "1 of 3 files failed" in captured.err
    assert (tmp_path / "conversations.converted.jsonl").is_file()
    assert not (tmp_path / "broken.converted.jsonl").exists()
    assert not (tmp_path / "dataset_info.converted.jsonl").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".broken")]  # no temporary file left behind
    assert main(["convert", str(tmp_path)]) == 2  # a rerun changes nothing and still says the folder is not done
    assert "conversations.json: up to date" in capsys.readouterr().out


def test_two_sources_with_one_output_name_are_refused_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.json").write_text(json.dumps([{"prompt": "a", "completion": "1"}], indent=2))
    (tmp_path / "x.jsonl").write_text(json.dumps([{"prompt": "b", "completion": "2"}], indent=2))  # pretty-printed
    (tmp_path / "y.json").write_text(json.dumps([{"prompt": "c", "completion": "3"}], indent=2))
    assert main(["convert", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert out.count("x.json and x.jsonl would both convert to x.converted.jsonl") == 2
    assert not (tmp_path / "x.converted.jsonl").exists()  # neither is kept at the other's expense
    assert (tmp_path / "y.converted.jsonl").is_file()  # the rest of the folder still converts


def test_failed_rerun_names_the_earlier_output(tmp_path: Path) -> None:
    src = tmp_path / "one.json"
    src.write_text(json.dumps({"prompt": "p", "completion": "c"}))
    convert_folder(tmp_path)
    src.write_text("{")  # a newer download came in broken: the old records must not train unnoticed
    (report,) = [r for r in convert_folder(tmp_path) if r.path == src]
    assert report.action == "failed" and report.line == 1
    assert "the earlier one.converted.jsonl is left as it was" in report.reason


def test_report_leaves_out_zero_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = [node("r", None, ["u"]), node("u", "r", ["a"], "user", ["q"]), node("a", "u", [], "assistant", ["a"])]
    conversation = {"title": "plain", "current_node": "a", "mapping": {n["id"]: n for n in plain}}
    (tmp_path / "conversations.json").write_text(json.dumps([conversation]))
    assert main(["convert", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "converted (ChatGPT export)" in out and "1 records" in out
    assert not [line for line in out.splitlines() if line.strip().startswith("0 ")]
    assert "dropped" not in out and "trimmed" not in out


def test_trailing_user_turns_are_trimmed_and_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conversations = [trailing_question_conversation(), trailing_question_conversation(), unanswered_conversation()]
    (tmp_path / "conversations.json").write_text(json.dumps(conversations))
    report = convert_file(tmp_path / "conversations.json", tmp_path)
    assert report.records == 2
    assert report.counts["trailing user turns trimmed"] == 2  # the unanswered one is skipped, not trimmed
    assert report.counts["skipped conversations without an assistant reply"] == 1
    record = json.loads(report.output.read_text().splitlines()[0])  # type: ignore[union-attr]
    assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
    assert main(["convert", str(tmp_path)]) == 0
    assert "    2 trailing user turns trimmed" in capsys.readouterr().out


def test_ledger_write_failure_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "one.json").write_text(json.dumps({"prompt": "p", "completion": "c"}))

    def full_disk(path: Path, data: dict[str, Any]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("loraops.data.convert.write_json", full_disk)
    (report,) = convert_folder(tmp_path)
    assert report.action == "failed" and "No space left on device" in report.reason
    # an output the ledger does not vouch for would make every rerun refuse to replace it
    assert not (tmp_path / "one.converted.jsonl").exists()
