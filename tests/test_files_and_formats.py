"""JSONL reading and record formats: what is accepted, and errors that name file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loraops.data.files import read_jsonl, read_records
from loraops.data.formats import to_example
from loraops.data.sources import find_training_files, load_examples
from loraops.errors import DataError


def test_bom_crlf_and_blank_lines_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"prompt": "p1", "completion": "c1"}\r\n\r\n  \n{"prompt": "p2", "completion": "c2"}\r\n'
    )
    assert [(n, r["prompt"]) for n, r in read_jsonl(path)] == [(1, "p1"), (4, "p2")]


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [
        (b'{"prompt": "a", "completion": "b"}\n{"prompt": "a",\n', 2, "invalid JSON"),
        (b'{"prompt": "a", "completion": "b"}\n\n{"prompt": "caf\xe9", "completion": "b"}\n', 3, "not valid UTF-8"),
        (b'["a list"]\n', 1, "expected a JSON object"),
    ],
)
def test_unreadable_lines_name_file_and_line(tmp_path: Path, content: bytes, line: int, fragment: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        list(read_jsonl(path))
    assert err.value.line == line and fragment in str(err.value)
    assert str(err.value).startswith(f"{path}:{line}: ")


def test_each_format_becomes_chat_messages() -> None:
    p = Path("f.jsonl")
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    assert to_example({"messages": msgs}, "auto", p, 1).messages == msgs
    assert to_example({"prompt": "u", "completion": "a"}, "auto", p, 1).messages == msgs[1:]
    assert to_example({"prompt": "u", "completion": "a", "system": "s"}, "prompt_completion", p, 1).messages == msgs
    inst = to_example({"instruction": "do", "input": "this", "output": "a"}, "auto", p, 1)
    assert inst.format == "instruction"
    assert inst.messages == [{"role": "user", "content": "do\n\nthis"}, {"role": "assistant", "content": "a"}]
    assert to_example({"instruction": "do", "output": "a"}, "auto", p, 1).messages[0]["content"] == "do"


@pytest.mark.parametrize(
    ("record", "fmt", "fragment"),
    [
        ({"prompt": "u"}, "prompt_completion", "missing field `completion`"),
        ({"prompt": "u", "completion": 3}, "auto", "field `completion` must be a string, got int"),
        ({"instruction": "x", "output": None}, "instruction", "field `output` must be a string"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "auto", "`messages[0].role` is 'bot'"),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "auto", "`messages[0].content` must be a string"),
        ({"messages": [{"role": "user", "content": "x"}]}, "auto", "no assistant turn"),
        ({"messages": []}, "messages", "must be a non-empty list"),
        ({"txt": "x"}, "auto", "cannot tell the format of a record with fields `txt`"),
        ({"prompt": "u", "completion": "a"}, "messages", "missing field `messages`"),
    ],
)
def test_bad_records_are_named(record: dict, fmt: str, fragment: str) -> None:
    with pytest.raises(DataError) as err:
        to_example(record, fmt, Path("d/train.jsonl"), 7)
    assert str(err.value).startswith("d/train.jsonl:7: ")
    assert fragment in str(err.value)


def test_eval_folder_is_never_training_data(small_dataset: Path) -> None:
    files = find_training_files(str(small_dataset), "**/*.jsonl")
    assert [f.path.name for f in files] == ["train.jsonl"]
    assert all(len(f.sha256) == 64 for f in files)


def test_empty_dataset_and_no_files_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="the dataset is empty"):
        load_examples(find_training_files(str(tmp_path), "*.jsonl"), "auto")
    with pytest.raises(DataError, match="no training files match"):
        find_training_files(str(tmp_path), "*.json")


def test_every_array_and_object_of_a_json_file_is_read_as_convert_reads_it(tmp_path: Path) -> None:
    from loraops.data.convert import convert_file

    path = tmp_path / "two-arrays.json"
    first, second = [{"prompt": "a", "completion": "1"}, {"prompt": "b", "completion": "2"}], [{"text": "c"}]
    path.write_text(json.dumps(first, indent=1) + "\n" + json.dumps(second) + '\n{"prompt": "d", "completion": "4"}\n')
    records = list(read_records(path))
    assert [record for _, record in records] == [*first, *second, {"prompt": "d", "completion": "4"}]
    assert [line for line, _ in records] == [2, 6, 11, 12]  # each record's own line, never a silent drop
    (tmp_path / "out").mkdir()
    assert convert_file(path, tmp_path / "out").records == 4  # `convert` reads the same records


def test_json_line_numbers_cost_one_pass() -> None:
    from loraops.data.files import json_values

    class CountingText(str):
        scanned = 0

        def count(self, sub: str, start: int | None = None, end: int | None = None) -> int:  # type: ignore[override]
            CountingText.scanned += (len(self) if end is None else end) - (start or 0)
            return super().count(sub, start, end)

    text = CountingText(
        "[\n" + ",\n".join(json.dumps({"prompt": str(i), "completion": "x"}) for i in range(3000)) + "\n]"
    )
    assert len(json_values(Path("big.json"), text)[0].value) == 3000
    assert CountingText.scanned <= 2 * len(text)  # counted from the last record's line, not from the start each time
