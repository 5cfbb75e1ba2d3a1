"""The data formats people have, read from small excerpts of real public datasets (tests/data/formats/SOURCES.md)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from support import CONFIGS, write_jsonl

from loraops.config import TrainConfig, load_config
from loraops.data.datafiles import fingerprint
from loraops.data.files import read_records
from loraops.data.formats import FormatOptions, to_example
from loraops.data.prepare import encode_examples
from loraops.data.sources import find_training_files, load_examples
from loraops.data.tokenize import IGNORE_INDEX
from loraops.errors import DataError
from loraops.eval.data import load_split

FORMATS = Path(__file__).parent / "data" / "formats"

# A ChatML template that renders tools and tool calls, as the templates of tool-trained models do.
TOOL_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n"
    "{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}<|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def load(name: str, **options: Any) -> list[Any]:
    return load_examples(fingerprint([FORMATS / name], FORMATS), FormatOptions(**options)).examples


def trained_text(tokenizer: Any, example: Any) -> str:
    (enc,) = encode_examples(tokenizer, [example], 1024).encoded
    return tokenizer.decode([t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE_INDEX])


@pytest.mark.parametrize(
    ("name", "fmt", "n"),
    [
        ("alpaca.json", "instruction", 4),
        ("sharegpt.json", "sharegpt", 3),
        ("dolly.jsonl", "dolly", 4),
        ("openai_chat.jsonl", "messages", 3),
        ("content_parts.jsonl", "messages", 3),
        ("conversational_pc.jsonl", "prompt_completion", 3),
        ("question_answer.jsonl", "question_answer", 4),
        ("input_output.jsonl", "input_output", 2),
        ("text.jsonl", "text", 3),
        ("tool_calls_openai.jsonl", "messages", 2),
        ("sharegpt_tools.json", "sharegpt", 2),
    ],
)
def test_real_files_are_detected(name: str, fmt: str, n: int, tokenizer: Any) -> None:
    examples = load(name)
    assert len(examples) == n and {e.format for e in examples} == {fmt}
    assert all(e.line >= 1 for e in examples) and examples[0].path.endswith(name)


def test_alpaca_with_and_without_input(tokenizer: Any) -> None:
    first = load("alpaca.json")[0]
    record = json.loads((FORMATS / "alpaca.json").read_text())[0]
    assert first.messages[0]["content"].startswith(record["instruction"]) and first.line == 2
    empty = to_example({"instruction": "", "input": "Translate: bonjour", "output": "hello"}, "auto", Path("a.json"), 3)
    assert empty.messages[0] == {"role": "user", "content": "Translate: bonjour"}  # no leading blank lines
    with pytest.raises(DataError, match=r"a.json:4: `instruction` and `input` are both empty"):
        to_example({"instruction": " ", "input": "", "output": "x"}, "auto", Path("a.json"), 4)


def test_sharegpt_keeps_the_system_prompt_and_roles() -> None:
    records = json.loads((FORMATS / "sharegpt.json").read_text())
    examples = load("sharegpt.json")
    with_system = next(i for i, r in enumerate(records) if r.get("system"))
    assert examples[with_system].messages[0] == {"role": "system", "content": records[with_system]["system"]}
    assert {m["role"] for e in examples for m in e.messages} <= {"system", "user", "assistant"}


def test_dolly_maps_context_to_input() -> None:
    record = json.loads((FORMATS / "dolly.jsonl").read_text().splitlines()[0])
    (example, *_) = load("dolly.jsonl")
    expected = "\n\n".join(p for p in (record["instruction"], record["context"]) if p.strip())
    assert example.messages == [
        {"role": "user", "content": expected},
        {"role": "assistant", "content": record["response"]},
    ]


def test_openai_weight_zero_is_not_trained(tokenizer: Any) -> None:
    example = load("openai_chat.jsonl")[0]
    assert example.untrained == {2}  # "Paris", weight 0
    trained = trained_text(tokenizer, example)
    assert "as if everyone doesn't know" in trained and "Paris<|im_end|>" not in trained.replace("already.", "")
    with pytest.raises(DataError, match=r"`messages\[1\].weight` is 0.5"):
        to_example(
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0.5}]},
            "auto",
            Path("w.jsonl"),
            1,
        )


def test_content_parts_are_joined_and_images_refused_or_skipped() -> None:
    record = json.loads((FORMATS / "content_parts.jsonl").read_text().splitlines()[0])
    assert load("content_parts.jsonl")[0].messages[0]["content"] == record["messages"][0]["content"][0]["text"]
    with pytest.raises(DataError, match=r"content_image.jsonl:1: .*'image_url' part.*skip_non_text=true"):
        load("content_image.jsonl")
    loaded = load_examples(
        fingerprint([FORMATS / "content_image.jsonl", FORMATS / "content_parts.jsonl"], FORMATS),
        FormatOptions(skip_non_text=True),
    )
    assert len(loaded.examples) == 3 and loaded.skipped == {"non-text content (skip_non_text)": 2}


def test_multimodal_records_are_refused() -> None:
    with pytest.raises(DataError, match=r"multimodal.json:2: the record has `images`: it is multimodal"):
        load("multimodal.json")
    record = {
        "messages": [{"role": "user", "content": "<image>What is this?"}, {"role": "assistant", "content": "A cat"}]
    }
    with pytest.raises(DataError, match="placeholder"):
        to_example(record, "auto", Path("m.jsonl"), 1)


def test_conversational_prompt_completion_trains_the_completion_only(tokenizer: Any) -> None:
    example = load("conversational_pc.jsonl")[0]
    assert [m["role"] for m in example.messages] == ["user", "assistant"]
    assert trained_text(tokenizer, example) == "Beautiful.<|im_end|>"


def test_preference_data_is_refused_with_the_way_out() -> None:
    with pytest.raises(DataError, match=r"preference_dpo.json:2: this is preference data .*preference=chosen"):
        load("preference_dpo.json")
    with pytest.raises(DataError, match=r"preference_kto.json:2: this is preference data \(KTO"):
        load("preference_kto.json")
    records = json.loads((FORMATS / "preference_dpo.json").read_text())
    chosen = load("preference_dpo.json", preference="chosen")
    assert chosen[0].messages[-1] == {"role": "assistant", "content": records[0]["chosen"]["value"]}
    kto = load_examples(fingerprint([FORMATS / "preference_kto.json"], FORMATS), FormatOptions(preference="chosen"))
    labels = [r["label"] for r in json.loads((FORMATS / "preference_kto.json").read_text())]
    assert len(kto.examples) == labels.count(True) and kto.skipped == {
        "completion labelled false (preference=chosen)": 1
    }


def test_raw_text_trains_every_token(tokenizer: Any) -> None:
    example = load("text.jsonl")[0]
    (enc,) = encode_examples(tokenizer, [example], 4096).encoded
    assert enc.labels == enc.input_ids and enc.input_ids[-1] == tokenizer.eos_token_id
    assert (
        tokenizer.decode(enc.input_ids[:-1]) == json.loads((FORMATS / "text.jsonl").read_text().splitlines()[0])["text"]
    )
    with pytest.raises(DataError, match="no question and answer to evaluate"):
        load_split(FORMATS / "text.jsonl")


def test_tool_calls_need_a_template_that_renders_them(tokenizer: Any) -> None:
    examples = load("tool_calls_openai.jsonl") + load("sharegpt_tools.json")
    with pytest.raises(
        DataError, match=r"tool_calls_openai.jsonl:1: .*this model's chat template cannot render tool calls"
    ):
        encode_examples(tokenizer, examples[:1], 1024)
    tooled = copy.deepcopy(tokenizer)
    tooled.chat_template = TOOL_TEMPLATE
    call = examples[0].messages[1]["tool_calls"][0]["function"]
    assert call == {"name": "get_current_weather", "arguments": {"location": "San Francisco, USA", "format": "celsius"}}
    trained = trained_text(tooled, examples[0])
    assert trained.startswith('<tool_call>{"name": "get_current_weather"') and trained.endswith(
        "</tool_call><|im_end|>"
    )
    glaive = examples[3]
    assert glaive.tools and glaive.tools[0]["type"] == "function"
    assert [m["role"] for m in glaive.messages][:4] == ["user", "assistant", "tool", "assistant"]
    assert glaive.messages[1]["tool_calls"][0]["function"]["name"]
    assert encode_examples(tooled, examples, 2048).stats.examples == 4


def test_columns_map_any_layout_and_name_missing_fields(tmp_path: Path) -> None:
    options = FormatOptions(columns={"prompt": "q", "completion": "a"}, system_prompt="Be brief.")
    example = to_example({"q": "2+2?", "a": "4", "id": 9}, options, tmp_path / "x.jsonl", 1)
    assert example.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    with pytest.raises(DataError, match=r"x.jsonl:2: missing field `a` \(columns.completion\); the record has `q`"):
        to_example({"q": "2+2?"}, options, tmp_path / "x.jsonl", 2)
    with pytest.raises(DataError, match=r"cannot tell the format of a record with fields `a`, `q`.*columns="):
        to_example({"q": "2+2?", "a": "4"}, "auto", tmp_path / "x.jsonl", 3)
    write_jsonl(tmp_path / "eval" / "test.jsonl", [{"q": "3+3?", "a": "6"}])
    assert load_split(tmp_path / "eval" / "test.jsonl", options)[0].reference == "6"  # the same mapping for eval


def test_json_parquet_and_csv_are_read_and_errors_name_the_record(tmp_path: Path) -> None:
    from datasets import Dataset

    records = [json.loads(line) for line in (FORMATS / "question_answer.jsonl").read_text().splitlines()]
    Dataset.from_list(records).to_parquet(tmp_path / "qa.parquet")
    Dataset.from_list(records).to_csv(tmp_path / "qa.csv", index=False)
    (tmp_path / "qa.json").write_text("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"qa": {"file_name": "qa.json"}}))
    (tmp_path / "notes.md").write_text("not data")
    files = find_training_files(str(tmp_path), "*")
    assert [f.name for f in files] == ["qa.csv", "qa.json", "qa.parquet"]
    examples = load_examples(files).examples
    assert len(examples) == 12 and {e.format for e in examples} == {"question_answer"}
    assert [e.line for e in examples if e.path.endswith(".json")] == [2, 3, 4, 5]  # each record's own line
    bad = [*records[:2], {"question": "q", "answer": 5}]
    (tmp_path / "bad.json").write_text(json.dumps(bad, indent=2))
    with pytest.raises(
        DataError, match=r"bad.json:10: field `answer` must be a string"
    ):  # its own name, not `completion`
        load_examples(fingerprint([tmp_path / "bad.json"], tmp_path))
    Dataset.from_list([{"question": "q", "answer": 5}]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad.parquet, row 1: field `answer` must be a string"):
        load_examples(fingerprint([tmp_path / "bad.parquet"], tmp_path))
    (tmp_path / "broken.json").write_text('[{"question": "q", "answer": "a"},\n {"question": }]')
    with pytest.raises(DataError, match=r"broken.json:2: invalid JSON"):
        list(read_records(tmp_path / "broken.json"))


def test_chatgpt_export_in_the_data_folder_points_to_convert(tmp_path: Path) -> None:
    (tmp_path / "conversations.json").write_text(json.dumps([{"title": "t", "mapping": {}}]))
    with pytest.raises(DataError, match="this is a ChatGPT export; turn it into JSONL first: loraops convert"):
        load_examples(find_training_files(str(tmp_path), "*"))
    write_jsonl(tmp_path / "conversations.converted.jsonl", [{"prompt": "q", "completion": "a"}])
    assert [f.name for f in find_training_files(str(tmp_path), "*")] == ["conversations.converted.jsonl"]


def test_mixed_folder_trains_through_the_data_step(tmp_path: Path, tokenizer: Any, default_model_dir: Path) -> None:
    from loraops.data.prepare import prepare_data

    data = tmp_path / "data"
    for name in ("alpaca.json", "sharegpt.json", "dolly.jsonl", "question_answer.jsonl", "text.jsonl"):
        (data / name).parent.mkdir(exist_ok=True)
        (data / name).write_bytes((FORMATS / name).read_bytes())
    (data / "again.jsonl").write_bytes((FORMATS / "dolly.jsonl").read_bytes())  # four duplicates
    cfg = load_config(TrainConfig, CONFIGS, "train", [f"dataset_path={data}", "max_length=2048", "dedup=true"])
    prepared = prepare_data(cfg, tokenizer, str(default_model_dir))
    stats = prepared.stats
    assert stats.formats == {"instruction": 4, "sharegpt": 3, "dolly": 4, "question_answer": 4, "text": 3}
    assert stats.duplicates == 4 and stats.deduplicated == 4 and stats.records == 18 == len(prepared.rows)


def test_columns_from_the_command_line(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, default_model_dir: Path
) -> None:
    from loraops.cli import main

    caplog.set_level("INFO", logger="loraops")
    args = ["check", f"dataset_path={FORMATS}", "dataset_pattern=question_answer.jsonl"]
    assert main([*args, "columns={prompt: question, completion: answer}", "system_prompt=Show your working."]) == 0
    assert "4 as prompt_completion, columns prompt=question, completion=answer" in caplog.text
    assert main([*args, "columns={question: q}"]) == 2
    assert "columns={'question': 'q'} must map some of messages" in capsys.readouterr().err


def test_eval_splits_in_json_and_csv(tmp_path: Path) -> None:
    from datasets import Dataset

    from loraops.eval.data import find_splits

    records = [json.loads(line) for line in (FORMATS / "question_answer.jsonl").read_text().splitlines()]
    (tmp_path / "test.json").write_text(json.dumps(records, indent=1))
    Dataset.from_list(records[:2]).to_csv(tmp_path / "dev.csv", index=False)
    (tmp_path / "README.md").write_text("not a split")
    splits = find_splits(str(tmp_path), "*")
    assert list(splits) == ["dev", "test"]
    assert [len(load_split(p)) for p in splits.values()] == [2, 4]
    assert load_split(splits["test"])[0].reference == records[0]["answer"]


def test_check_reports_skipped_and_deduplicated_records(tmp_path: Path, default_model_dir: Path) -> None:
    from loraops.check import check, format_report

    data = tmp_path / "data"
    data.mkdir()
    for name in ("content_image.jsonl", "content_parts.jsonl"):
        (data / name).write_bytes((FORMATS / name).read_bytes())
    (data / "again.jsonl").write_bytes((FORMATS / "content_parts.jsonl").read_bytes())
    cfg = load_config(TrainConfig, CONFIGS, "train", [f"dataset_path={data}", "skip_non_text=true", "dedup=true"])
    text = format_report(check(cfg))
    assert "duplicate records (whitespace aside): 3, 3 dropped by dedup" in text
    assert "skipped on purpose: 2 (non-text content (skip_non_text))" in text
