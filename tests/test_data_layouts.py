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
from loraops.data.formats import EMPTY_SYSTEM_REMOVED, LOOKS_CONTINUED, Example, FormatOptions, to_example
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


# --- real files -----------------------------------------------------------------------------------------------


def test_xtuner_loss_false_keeps_that_answer_out_of_training(tokenizer: Any) -> None:
    _, marked = load("xtuner_loss.jsonl")
    assert [m["role"] for m in marked.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert marked.untrained == {2} and len(trained_parts(tokenizer, marked)) == 1


def test_llamafactory_v1_turns_read_value_parts_and_loss_weight(tokenizer: Any) -> None:
    first = load("llamafactory_loss_weight.jsonl")[0]
    assert first.messages[0] == {"role": "user", "content": "hi"} and not first.untrained
    assert trained_parts(tokenizer, first) == [first.messages[1]["content"] + "<|im_end|>"]
    reasoned, called = load("llamafactory_v1_parts.jsonl")[1:3]
    answer = reasoned.messages[-1]
    assert answer["reasoning_content"].startswith("Okay, the user wants to track") and answer["content"]
    assert "Okay" not in answer["content"]  # the reasoning part is not the answer's text
    call = called.messages[-1]["tool_calls"][0]["function"]
    assert call["name"] == "get_products_in_category" and call["arguments"]["limit"] == 15
    assert called.tools and called.tools[0]["function"]["name"] == "get_products_in_category"


def test_real_reasoning_records_train_their_reasoning_where_the_template_renders_it(tokenizer: Any) -> None:
    hy3 = load("reasoning_content.jsonl")[:2]
    thinking = _reasoning_tokenizer(tokenizer)
    for example in hy3:
        reasoning = example.messages[-1]["reasoning_content"]
        assert trained_parts(thinking, example)[-1].startswith(f"<think>\n{reasoning}\n</think>")
    with pytest.raises(DataError, match="reasoning_content.jsonl:1: the record has reasoning"):
        encode_examples(tokenizer, hy3, 4096)
    dropped = load("reasoning_content.jsonl", reasoning="drop")[0]
    assert not dropped.has_reasoning and trained_parts(tokenizer, dropped)


def test_axolotls_missing_turn_is_skipped_and_counted() -> None:
    loaded = load_examples(fingerprint([FORMATS / "missing_turns.jsonl"], FORMATS), FormatOptions())
    assert dict(loaded.skipped) == {"an empty assistant turn": 1} and len(loaded.examples) == 1
    assert loaded.examples[0].line == 2


def test_openhermes_empty_system_turn_gives_way_to_system_prompt(tokenizer: Any) -> None:
    (bare,) = load("openhermes_empty_system.json")
    assert [m["role"] for m in bare.messages] == ["user", "assistant"] and bare.notes == (EMPTY_SYSTEM_REMOVED,)
    (filled,) = load("openhermes_empty_system.json", system_prompt="You are Hermes.")
    assert filled.messages[0] == {"role": "system", "content": "You are Hermes."}
    (enc,) = encode_examples(tokenizer, [bare], 2048).encoded
    assert "<|im_start|>system\n<|im_end|>" not in tokenizer.decode(enc.input_ids)


def test_trls_standard_prompt_completion_trains_as_a_continuation(tokenizer: Any) -> None:
    chat = load("continuation_pc.jsonl")
    assert all(e.notes == (LOOKS_CONTINUED,) for e in chat)  # check says what they look like
    examples = load("continuation_pc.jsonl", prompt_completion="continuation")
    for example, record in zip(examples, map(json.loads, (FORMATS / "continuation_pc.jsonl").read_text().splitlines())):
        (enc,) = encode_examples(tokenizer, [example], 256).encoded
        assert tokenizer.decode(enc.input_ids) == record["prompt"] + record["completion"] + tokenizer.eos_token
        assert trained_parts(tokenizer, example) == [record["completion"] + tokenizer.eos_token]
        assert "<|im_start|>" not in tokenizer.decode(enc.input_ids)


def test_a_line_that_is_a_bare_list_of_turns_is_a_conversation() -> None:
    from loraops.data.files import read_records

    records = read_records(FORMATS / "bare_list.jsonl")
    examples = [to_example(record, "auto", "bare_list.jsonl", line) for line, record in [next(records), next(records)]]
    assert [e.format for e in examples] == ["messages", "messages"] and len(examples[0].messages) == 10
    with pytest.raises(DataError, match=r"bare_list.jsonl:3: `messages\[1\].content\[1\]` is a 'tool_call' part"):
        load("bare_list.jsonl")


def test_openais_preference_file_is_refused_or_trained_on_its_preferred_answers() -> None:
    with pytest.raises(
        DataError, match="openai_preference.jsonl:1: this is OpenAI's preference data.*preference=chosen"
    ):
        load("openai_preference.jsonl")
    chosen = load("openai_preference.jsonl", preference="chosen")
    records = [json.loads(line) for line in (FORMATS / "openai_preference.jsonl").read_text().splitlines()]
    for example, record in zip(chosen, records):
        assert example.messages[-1]["content"] == record["preferred_output"][0]["content"]
        assert len(example.messages) == len(record["input"]["messages"]) + 1


def test_vertex_gemini_contents_become_turns() -> None:
    with_system, plain = load("vertex_contents.jsonl")
    record = json.loads((FORMATS / "vertex_contents.jsonl").read_text().splitlines()[0])
    assert with_system.format == "gemini" and with_system.messages[0] == {
        "role": "system",
        "content": record["systemInstruction"]["parts"][0]["text"],
    }
    assert [m["role"] for m in plain.messages] == ["user", "assistant"]


def test_xtuner_conversation_rounds_become_turns() -> None:
    records = [json.loads(line) for line in (FORMATS / "xtuner_conversation.jsonl").read_text().splitlines()]
    for example, record in zip(load("xtuner_conversation.jsonl"), records):
        rounds = record["conversation"]
        assert example.format == "xtuner"
        assert [m["content"] for m in example.messages if m["role"] == "assistant"] == [r["output"] for r in rounds]
        assert (example.messages[0]["role"] == "system") == any(r.get("system") for r in rounds)


def test_openassistant_trees_give_their_best_path_or_every_path() -> None:
    trees = json.loads((FORMATS / "oasst_tree.json").read_text())
    best = load("oasst_tree.json")
    assert len(best) == 2 and all(e.line >= 1 for e in best)
    first_best = min(trees[0]["prompt"]["replies"], key=lambda r: r["rank"])
    assert best[0].messages == [
        {"role": "user", "content": trees[0]["prompt"]["text"]},
        {"role": "assistant", "content": first_best["text"]},
    ]
    every = load("oasst_tree.json", tree_paths="all")
    assert len(every) == 3 + 4  # one per leaf: three answers to the first prompt, four leaves in the second tree
    assert len({json.dumps(e.messages) for e in every}) == 7


def test_check_names_what_it_made_of_the_records(tmp_path: Path, default_model_dir: Path) -> None:
    from support import CONFIGS

    from loraops.check import check, format_report
    from loraops.config import TrainConfig, load_config

    data = tmp_path / "data"
    data.mkdir()
    for name in ("missing_turns.jsonl", "openhermes_empty_system.json"):
        (data / name).write_bytes((FORMATS / name).read_bytes())
    write_jsonl(
        data / "more.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "word " * 400},
                    {"role": "assistant", "content": "ok", "mood": "x"},
                ]
            },
            _record(),
        ],
    )
    cfg = load_config(TrainConfig, CONFIGS, "train", [f"dataset_path={data}", "val_fraction=0"])
    text = format_report(check(cfg))
    assert "skipped on purpose: 1 (an empty assistant turn)" in text
    assert f"{EMPTY_SYSTEM_REMOVED}: 1" in text
    assert "turn keys loraops does not read (left out of training): `mood` (1 records)" in text
    assert "all labels masked (dropped): 1" in text and f"{data / 'more.jsonl'}:1 (" in text
    assert "raise max_length (now 256)" in text
    # The example has no system turn: SmolLM2's template writes its own, which is not the data's.
    assert "«You are a helpful AI assistant named SmolLM, trained by Hugging Face»" in text


def test_every_bad_record_is_named_up_to_ten_then_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from loraops.cli import main

    lines = [json.dumps({"messages": [{"role": "bot", "content": f"{i}"}]}) for i in range(12)]
    lines.insert(5, '{"messages": [')  # a broken line among them is one more bad record, not the end of the file
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "chat.jsonl").write_text("\n".join([json.dumps(_record()), *lines]) + "\n")
    assert main(["check", f"dataset_path={tmp_path / 'data'}", "val_fraction=0"]) == 2
    err = capsys.readouterr().err
    named = [line.split("chat.jsonl:")[1].split(":")[0] for line in err.splitlines() if "chat.jsonl:" in line]
    assert named == [str(n) for n in range(2, 12)] and "chat.jsonl:7: invalid JSON" in err
    assert "... and 3 more bad records" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("record", "advice"),
    [
        ({"query": "Sum A1:A3", "response": "=SUM(A1:A3)", "id": 7}, "columns='{prompt: query, completion: response}'"),
        ({"chat": [{"role": "user", "content": "hi"}]}, "columns='{messages: chat}'"),
        ({"dialog": [{"speaker": "a", "text": "hi"}]}, "`columns` cannot rename"),
        ({"instrution": "Sum", "output": "=SUM()"}, "`instrution` looks like `instruction` misspelt"),
    ],
)
def test_an_unknown_layout_gets_the_one_way_that_reads_it(record: dict[str, Any], advice: str) -> None:
    with pytest.raises(DataError, match="cannot tell the format") as caught:
        to_example(record, "auto", "x.jsonl", 1)
    assert advice in str(caught.value)
