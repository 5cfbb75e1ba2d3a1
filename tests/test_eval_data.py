"""Eval splits: formats, references and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import write_jsonl

from loraops.errors import DataError
from loraops.eval.data import find_splits, load_split


def test_prompt_completion_and_messages_splits(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "test.jsonl",
        [
            {"prompt": "p", "completion": "c"},
            {
                "messages": [
                    {"role": "user", "content": "u1"},
                    {"role": "assistant", "content": "a1"},
                    {"role": "user", "content": "u2"},
                    {"role": "assistant", "content": "a2"},
                ]
            },
        ],
    )
    first, second = load_split(path)
    assert first.prompt == [{"role": "user", "content": "p"}] and first.reference == "c"
    assert second.reference == "a2" and [m["content"] for m in second.prompt] == ["u1", "a1", "u2"]
    assert (second.path, second.line) == (str(path), 2)


@pytest.mark.parametrize(
    ("records", "fragment"),
    [
        ([{"prompt": "p", "completion": "c"}, {"prompt": "p"}], ":2: cannot tell the format"),
        ([{"prompt": "p", "completion": 1}], ":1: field `completion` must be a string"),
        ([{"messages": [{"role": "user", "content": "u"}]}], ":1: the conversation has no assistant turn"),
        ([{"messages": [{"role": "assistant", "content": "a"}]}], ":1: the conversation starts with an assistant turn"),
        ([], "the eval split is empty"),
    ],
)
def test_bad_eval_files(tmp_path: Path, records: list, fragment: str) -> None:
    path = write_jsonl(tmp_path / "dev.jsonl", records)
    with pytest.raises(DataError) as err:
        load_split(path)
    assert str(err.value).startswith(str(path)) and fragment in str(err.value)


def test_find_splits(tmp_path: Path) -> None:
    for name in ("test", "dev", "extra"):
        write_jsonl(tmp_path / f"{name}.jsonl", [{"prompt": "p", "completion": "c"}])
    assert list(find_splits(str(tmp_path), "*.jsonl")) == ["dev", "extra", "test"]
    assert list(find_splits(str(tmp_path), "*.jsonl", ["test", "dev"])) == ["test", "dev"]
    with pytest.raises(DataError, match="no eval split named adversarial"):
        find_splits(str(tmp_path), "*.jsonl", ["adversarial"])
    with pytest.raises(DataError, match="no eval files match"):
        find_splits(str(tmp_path / "none"), "*.jsonl")
