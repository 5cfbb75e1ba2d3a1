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
from hypothesis import HealthCheck, event, given, settings
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


# --- compare's records ------------------------------------------------------------------------------

record_fields = st.sampled_from(
    ["id", "prompt", "messages", "reference", "prediction", "scores", "metrics", "fingerprint", "n", "exact_match"]
)


def poke(value: Any, data: st.DataObject) -> Any:
    """`value` with one field somewhere inside set to a random JSON value, or removed."""
    if isinstance(value, dict) and value and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(value)) | record_fields)
        if data.draw(st.booleans()):
            return {k: v for k, v in value.items() if k != key}
        return {**value, key: poke(value.get(key), data)}
    if isinstance(value, list) and value and data.draw(st.booleans()):
        at = data.draw(st.integers(0, len(value) - 1))
        return [*value[:at], poke(value[at], data), *value[at + 1 :]]
    return data.draw(json_values)


@settings(SETTINGS, max_examples=40)
@given(data=st.data())
def test_changed_eval_records_never_make_a_worse_run_improved(
    capsys: pytest.CaptureFixture[str], data: st.DataObject
) -> None:
    """The run answers 10% right, its base model 50%: whatever is changed in the run's records afterwards
    (a field, a line, bytes), compare says NOT IMPROVED or INCONCLUSIVE, or refuses with exit 2; never a
    traceback, never IMPROVED."""
    from support import fake_metrics, make_run

    with folder() as path:
        run = make_run(path / "runs", "r1")
        fake_metrics(path / "m", "r1", {"test": 10.0}, n=16)
        fake_metrics(path / "m", "baseline/default", {"test": 50.0}, n=16)
        target = path / "m" / "r1" / data.draw(st.sampled_from(["test.json", "test.predictions.jsonl", "summary.json"]))
        # A record file is one JSON document; a predictions file, one per line.
        lines = target.read_bytes().splitlines() if target.suffix == ".jsonl" else [target.read_bytes()]
        at = data.draw(st.integers(0, len(lines) - 1))
        if data.draw(st.booleans()):
            lines[at] = json.dumps(poke(json.loads(lines[at]), data)).encode()
        else:
            lines[at] = mutate(lines[at], data)
        target.write_bytes(b"\n".join(lines) + b"\n")
        args = ["compare", "--config-dir", str(CONFIGS), f"run={run}", f"metrics_dir={path / 'm'}"]
        code = main([*args, f"reference_file={path / 'reference.json'}", "bootstrap_resamples=200"])
        err = capsys.readouterr().err
        assert code in (1, 2, 3) and "Traceback" not in err, err[-3000:]


# --- the server's requests --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_url(tiny_model_dir: Path) -> Iterator[str]:
    from support import serving

    from loraops.inference import ChatModel
    from loraops.serve.app import create_app

    with serving(create_app(ChatModel.load(str(tiny_model_dir)), max_new_tokens=2)) as url:
        yield url


SERVED = "the served model"  # replaced by its name in the test
numbers = st.integers() | st.floats() | st.sampled_from([0, 1, -1, 2**32, 2**64, 10**30, 0.5, 1e300])
strings = texts | st.sampled_from(["\ud800", "a\udfffb", "x" * 70, "tiny", "hi"])
contents = strings | st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"])}, optional={"text": strings | scalars}),
    max_size=2,
)
# What a client sends...
fair = {
    "messages": st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["system", "developer", "user", "assistant"]), "content": st.text(max_size=30)}
        ),
        min_size=1,
        max_size=3,
    ),
    "max_tokens": st.integers(1, 3),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0.01, 1),
    "seed": st.integers(0, 2**32 - 1),
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=4),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
}
# ...and what a hostile or broken one may send instead.
foul = {
    "model": strings,
    "messages": st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["system", "user", "assistant", "tool", "robot"]) | scalars},
            optional={"content": contents | scalars, "name": strings},
        ),
        max_size=3,
    )
    | scalars,
    "max_tokens": numbers | scalars,
    "max_completion_tokens": numbers,
    "temperature": numbers,
    "top_p": numbers,
    "n": numbers,
    "seed": numbers | scalars,
    "stop": strings | st.lists(strings, max_size=6) | scalars,
    "stream": scalars,
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": scalars}) | scalars,
    "tools": st.lists(json_values, max_size=1) | scalars,
}


@st.composite
def requests(draw: Any) -> dict[str, Any]:
    """A fair request with up to two fields made foul (or left out)."""
    body = {"model": SERVED, "messages": draw(fair["messages"])}
    body |= {key: draw(value) for key, value in fair.items() if key != "messages" and draw(st.booleans())}
    for key in draw(st.lists(st.sampled_from(sorted(foul)), max_size=2, unique=True)):
        if draw(st.booleans()):
            body[key] = draw(foul[key])
        else:
            body.pop(key, None)
    return body


@settings(SETTINGS, max_examples=150)
@given(body=requests())
def test_random_requests_get_an_answer_or_a_4xx_in_openais_shape(
    server_url: str, tiny_model_dir: Path, body: dict[str, Any]
) -> None:
    import urllib.error
    import urllib.request

    if body.get("model") == SERVED:
        body = {**body, "model": tiny_model_dir.name}
    data = json.dumps(body).encode()  # JSON's ASCII escapes: how half a surrogate pair arrives
    request = urllib.request.Request(server_url + "/chat/completions", data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    event(f"status {status}")
    assert status in (200, 400, 404), (status, text[:500])
    if status != 200:
        assert set(json.loads(text)["error"]) == {"message", "type", "param", "code"}
    elif body.get("stream") is True:
        assert text.rstrip().endswith("data: [DONE]") and '"server_error"' not in text, text[-500:]
    else:
        assert json.loads(text)["object"] == "chat.completion"
