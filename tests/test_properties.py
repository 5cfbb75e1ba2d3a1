"""Property tests: random and mutated records, ChatGPT export trees and YAML configs go through
loading, `convert` and `check`; the outcome is success or a clean exit-2 error, never a traceback."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import CONFIGS

from loraops.cli import main
from loraops.config import EvalConfig, TrainConfig, load_config
from loraops.errors import LoraopsError

# Sized to keep the three properties under a minute on 2 CPU cores (check loads a tokenizer per example).
SETTINGS = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck), max_examples=60)
KEYS = [
    "messages",
    "prompt",
    "completion",
    "instruction",
    "input",
    "output",
    "system",
    "role",
    "content",
    "mapping",
    "message",
    "author",
    "parts",
    "parent",
    "children",
    "current_node",
    "title",
    "content_type",
]
TRICKY = [
    "",
    " ",
    "\n",
    "<|im_end|>",
    "<|im_start|>assistant\n",
    "{{ raise_exception('x') }}",
    "\\",
    "é漢😀",
    "user",
    "assistant",
    "system",
    "tool",
    "a" * 300,
]
texts = st.text(max_size=20) | st.sampled_from(TRICKY)
scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | texts
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | texts, inner, max_size=4),
    max_leaves=15,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool", 3]), "content": texts | scalars}
    ),
    max_size=5,
)
records = (
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5)
    | st.builds(lambda m: {"messages": m}, messages)
    | st.fixed_dictionaries({"prompt": texts | scalars, "completion": texts | scalars})
    | st.fixed_dictionaries({"instruction": texts, "output": texts}, optional={"input": texts | st.none()})
)


def mutate(line: bytes, data: st.DataObject) -> bytes:
    """Cut, splice in a random byte, or leave whole: what editors and crashed writers leave behind."""
    kind = data.draw(st.sampled_from(["whole", "whole", "cut", "byte", "surrogate"]))
    at = data.draw(st.integers(0, len(line)))
    if kind == "cut":
        return line[:at]
    if kind == "byte":
        return line[:at] + bytes([data.draw(st.integers(0, 255))]) + line[at:]
    if kind == "surrogate":
        return line.replace(b'"', b'"\\udc80', 1)
    return line


@contextmanager
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="loraops-prop-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def assert_clean(code: int, err: str) -> None:
    assert code in (0, 2) and "Traceback" not in err, err[-3000:]
    if code == 2:
        assert "loraops: error: " in err, err[-3000:]


@settings(SETTINGS, max_examples=30)
@given(data=st.data(), rows=st.lists(records, min_size=1, max_size=4))
def test_random_jsonl_through_check(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], data: st.DataObject, rows: list[dict[str, Any]]
) -> None:
    with folder() as path:
        lines = [mutate(json.dumps(r).encode(), data) for r in rows]
        (path / "train.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        code = main(["check", "--config-dir", str(CONFIGS), f"model_name={tiny_model_dir}", f"dataset_path={path}"])
        assert_clean(code, capsys.readouterr().err)


nodes = st.fixed_dictionaries(
    {
        "message": st.none()
        | st.fixed_dictionaries(
            {
                "author": st.fixed_dictionaries(
                    {"role": st.sampled_from(["user", "assistant", "system", "tool"]) | scalars}
                )
                | scalars,
                "content": st.fixed_dictionaries(
                    {
                        "content_type": st.sampled_from(["text", "code", "tether_quote"]) | scalars,
                        "parts": st.lists(texts | json_values, max_size=3) | scalars,
                    }
                )
                | scalars,
                "recipient": st.sampled_from(["all", "python"]),
                "metadata": st.dictionaries(st.sampled_from(["is_visually_hidden_from_conversation", "x"]), scalars)
                | scalars,
            }
        ),
        "parent": st.sampled_from(["n0", "n1", "n2", "n3", None]) | scalars,
        "children": st.lists(st.sampled_from(["n0", "n1", "n2", "n3"]), max_size=3) | scalars,
    },
)
conversations = st.fixed_dictionaries(
    {
        "mapping": st.dictionaries(st.sampled_from(["n0", "n1", "n2", "n3"]), nodes | scalars, min_size=1)
        | json_values,
        "current_node": st.sampled_from(["n0", "n1", "n2", "n3", "missing"]) | scalars,
    },
    optional={"title": texts | scalars},
)


@SETTINGS
@given(export=st.lists(conversations, min_size=1, max_size=3), data=st.data())
def test_random_chatgpt_exports_through_convert(
    capsys: pytest.CaptureFixture[str], export: list[Any], data: st.DataObject
) -> None:
    with folder() as path:
        (path / "conversations.json").write_bytes(mutate(json.dumps(export, indent=1).encode(), data))
        assert_clean(main(["convert", str(path)]), capsys.readouterr().err)
        assert_clean(main(["convert", str(path)]), capsys.readouterr().err)  # a rerun is as clean


yaml_values = st.recursive(
    scalars | st.sampled_from(["${nope}", "???", "[1,", "{a: 1", "- x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
config_keys = st.sampled_from(
    [
        "lr",
        "epochs",
        "max_length",
        "lora_r",
        "data_format",
        "data_source",
        "remote",
        "defaults",
        "limit",
        "splits",
        "model",
        "lora_target_modules",
        "nonsense",
    ]
)


@SETTINGS
@given(entries=st.dictionaries(config_keys, yaml_values, max_size=4), raw=st.binary(max_size=40), use_raw=st.booleans())
def test_random_yaml_configs_load_or_fail_cleanly(entries: dict[str, Any], raw: bytes, use_raw: bool) -> None:
    import yaml

    with folder() as path:
        shutil.copytree(CONFIGS, path, dirs_exist_ok=True)
        text = raw if use_raw else yaml.safe_dump(entries, allow_unicode=True).encode()
        for name in ("train", "eval"):
            (path / f"{name}.yaml").write_bytes(text)
        for schema, name in ((TrainConfig, "train"), (EvalConfig, "eval")):
            try:
                load_config(schema, path, name, [])
            except LoraopsError:
                pass  # the CLI prints it and exits 2
