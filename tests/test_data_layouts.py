"""Layouts beyond the common ones, and the cases that used to train wrongly without a word: per-turn training
markers, reasoning, empty turns; read from excerpts of real public files (tests/data/formats/SOURCES.md) where
the layout has them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from support import write_jsonl

from loraops.data.datafiles import fingerprint
from loraops.data.formats import Example, FormatOptions, to_example
from loraops.data.prepare import encode_examples
from loraops.data.sources import load_examples
from loraops.data.tokenize import IGNORE_INDEX
from loraops.errors import DataError

FORMATS = Path(__file__).parent / "data" / "formats"

# Qwen3's way with reasoning, shortened: a turn's reasoning_content in <think> tags before its answer.
REASONING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.role == 'assistant' and m.reasoning_content %}<think>\n{{ m.reasoning_content }}\n</think>\n\n{% endif %}"
    "{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def load(name: str, folder: Path = FORMATS, **options: Any) -> list[Example]:
    return load_examples(fingerprint([folder / name], folder), FormatOptions(**options)).examples


def trained_parts(tokenizer: Any, example: Example, max_length: int = 2048) -> list[str]:
    """The trained spans of the example's tokens, as text, in order."""
    (enc,) = encode_examples(tokenizer, [example], max_length).encoded
    parts, run = [], []
    for token, label in [*zip(enc.input_ids, enc.labels), (None, IGNORE_INDEX)]:
        if label != IGNORE_INDEX:
            run.append(token)
        elif run:
            parts.append(tokenizer.decode(run))
            run = []
    return parts


def _record(**turn_extra: Any) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": "Sum A1:A3"},
            {"role": "assistant", "content": "=SUM(A1:A3)", **turn_extra},
            {"role": "user", "content": "And the mean?"},
            {"role": "assistant", "content": "=AVERAGE(A1:A3)"},
        ]
    }


@pytest.mark.parametrize(
    ("marker", "train"),
    [({"weight": 0}, {"weight": 1}), ({"loss": False}, {"loss": True}), ({"loss_weight": 0.0}, {"loss_weight": 1.0})],
)
def test_every_tools_do_not_train_marker_keeps_the_turn_as_context(
    tokenizer: Any, marker: dict[str, Any], train: dict[str, Any]
) -> None:
    example = to_example(_record(**marker), "auto", "chat.jsonl", 1)
    assert trained_parts(tokenizer, example) == ["=AVERAGE(A1:A3)<|im_end|>"]
    trained = to_example(_record(**train), "auto", "chat.jsonl", 1)
    assert trained_parts(tokenizer, trained) == ["=SUM(A1:A3)<|im_end|>", "=AVERAGE(A1:A3)<|im_end|>"]


@pytest.mark.parametrize(
    ("marker", "words"),
    [
        ({"loss_weight": 0.5}, "fully (1.0) or not at all (0.0)"),
        ({"loss": "no"}, "true or false"),
        ({"weight": 0, "loss": True}, "both to train it and not to"),
    ],
)
def test_a_marker_loraops_cannot_honour_is_refused_by_line_and_field(marker: dict[str, Any], words: str) -> None:
    with pytest.raises(DataError, match=r"chat.jsonl:7: `messages\[1\]") as caught:
        to_example(_record(**marker), "auto", "chat.jsonl", 7)
    assert words in str(caught.value)


def _reasoning_tokenizer(tokenizer: Any) -> Any:
    tooled = copy.deepcopy(tokenizer)
    tooled.chat_template = REASONING_TEMPLATE
    return tooled


def _reasoned(**options: Any) -> Example:
    record = _record(reasoning_content="The user wants a total: SUM.")
    return to_example(record, FormatOptions(**options), "chat.jsonl", 1)


def test_reasoning_is_rendered_and_trained_masked_or_dropped_as_asked(tokenizer: Any) -> None:
    thinking = _reasoning_tokenizer(tokenizer)
    trained = trained_parts(thinking, _reasoned())
    assert trained[0] == "<think>\nThe user wants a total: SUM.\n</think>\n\n=SUM(A1:A3)<|im_end|>"
    masked = trained_parts(thinking, _reasoned(reasoning="mask"))
    assert masked[0] == "\n</think>\n\n=SUM(A1:A3)<|im_end|>"  # the reasoning is context; the answer trains
    (enc,) = encode_examples(thinking, [_reasoned(reasoning="mask")], 2048).encoded
    assert "The user wants a total: SUM." in thinking.decode(enc.input_ids)
    dropped = trained_parts(thinking, _reasoned(reasoning="drop"))
    assert dropped[0] == "=SUM(A1:A3)<|im_end|>"


def test_reasoning_with_a_template_that_cannot_render_it_is_refused(tokenizer: Any) -> None:
    with pytest.raises(DataError, match=r"chat.jsonl:1: the record has reasoning .* reasoning=drop"):
        encode_examples(tokenizer, [_reasoned()], 2048)
    assert trained_parts(tokenizer, _reasoned(reasoning="drop"))[0] == "=SUM(A1:A3)<|im_end|>"


def test_empty_turns_are_skipped_or_mended_and_counted(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]},
            {"messages": [{"role": "system", "content": ""}, *_record()["messages"][:2]]},
            _record(),
        ],
    )
    loaded = load_examples(fingerprint([path], tmp_path), FormatOptions(system_prompt="You write formulas."))
    assert dict(loaded.skipped) == {"an empty assistant turn": 1}
    mended = loaded.examples[0]
    assert mended.messages[0] == {"role": "system", "content": "You write formulas."} and mended.notes
    bare = load_examples(fingerprint([path], tmp_path)).examples[0]
    assert bare.messages[0]["role"] == "user"  # no empty system block: the template's own default, as inference


def test_a_list_of_turns_written_into_a_csv_cell_is_read(tmp_path: Path) -> None:
    turns = _record()["messages"]
    rows = "messages\n" + "\n".join(
        '"' + text.replace('"', '""') + '"' for text in (json.dumps(turns), repr(turns))
    )  # JSON, and the Python form pandas writes
    (tmp_path / "chat.csv").write_text(rows + "\n")
    examples = load("chat.csv", tmp_path)
    assert [e.messages for e in examples] == [turns, turns]
    (tmp_path / "chat.csv").write_text('messages\n"[{role: user}"\n')
    with pytest.raises(DataError, match="chat.csv, row 1: field `messages` is text.*JSON"):
        load("chat.csv", tmp_path)


def test_a_renamed_dataset_registry_is_named_as_one(tmp_path: Path) -> None:
    registry = {"my_set": {"file_name": "my_set.json", "formatting": "sharegpt"}, "alpaca": {"file_name": "a.json"}}
    (tmp_path / "datasets.json").write_text(json.dumps(registry))
    with pytest.raises(DataError, match=r"datasets.json: this is a dataset registry .* \(a.json, my_set.json\)"):
        load("datasets.json", tmp_path)
