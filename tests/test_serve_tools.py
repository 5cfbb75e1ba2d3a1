"""Tool calling through `loraops serve`, driven by the openai client and LangChain: tools rendered by the chat
template, forced calls written by constrained decoding, calls the model chooses to write read back (whole and
streamed as OpenAI streams them), results sent back, and what a model cannot do refused by name."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from support import serving

from loraops.data.tokenize import tokenize_prompt
from loraops.inference import ChatModel, Reply
from loraops.serve.app import create_app
from loraops.tool_calls import HERMES, CallReader

# Qwen2.5's way with tools, shortened: definitions in the system turn, calls as <tool_call> JSON </tool_call>,
# results in <tool_response> user turns.
TOOL_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n\nYou may call functions. Signatures:\n<tools>"
    "{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools>\n"
    'Return each call as <tool_call>\n{"name": <name>, "arguments": <args>}\n</tool_call><|im_end|>\n'
    "{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' %}<|im_start|>assistant\n{{ m.content or '' }}"
    "{%- for c in m.tool_calls or [] %}<tool_call>\n"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}\n</tool_call>'
    "{%- endfor %}<|im_end|>\n"
    "{%- elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "Rome"]},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
USER = [{"role": "user", "content": "Weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


class Scripted(ChatModel):
    """The tiny model's tokenizer and template, with replies written in advance: what a tool-trained model
    would choose to say, which a random tiny model never does."""

    script: list[str] = []

    def generate(self, reply: Reply, streamer: Any, cancel: Any) -> None:
        import torch

        streamer.put(torch.tensor([reply.prompt_ids]))
        for token in self.tokenizer(self.script.pop(0), add_special_tokens=False)["input_ids"] + [self.stops[0]]:
            streamer.put(torch.tensor([token]))
        streamer.end()


@pytest.fixture(scope="module")
def plain(tiny_model_dir: Path) -> ChatModel:
    return ChatModel.load(str(tiny_model_dir))  # the default model's template: no tools


@pytest.fixture(scope="module")
def tooled(plain: ChatModel) -> ChatModel:
    tokenizer = copy.deepcopy(plain.tokenizer)
    tokenizer.chat_template = TOOL_TEMPLATE
    return ChatModel("m", plain.model, tokenizer)


@pytest.fixture(scope="module")
def client(tooled: ChatModel) -> Iterator[openai.OpenAI]:
    with serving(create_app(tooled, max_new_tokens=200)) as url:
        yield openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def scripted(plain: ChatModel) -> Iterator[tuple[Scripted, openai.OpenAI]]:
    tokenizer = copy.deepcopy(plain.tokenizer)
    tokenizer.chat_template = TOOL_TEMPLATE
    model = Scripted("m", plain.model, tokenizer)
    model.script = []
    with serving(create_app(model, max_new_tokens=200)) as url:
        yield model, openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=120)


def _ask(client: openai.OpenAI, **extra: Any) -> Any:
    return client.chat.completions.create(model="m", messages=USER, temperature=0, **extra)  # type: ignore[call-overload]


def _streamed_calls(chunks: Any) -> tuple[list[dict[str, Any]], str, str | None]:
    """The calls, text and finish reason a client assembles from the chunks, as the openai SDK does."""
    calls: dict[int, dict[str, Any]] = {}
    text, finish = "", None
    for chunk in chunks:
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": delta.id, "name": "", "arguments": ""})
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    return [calls[i] for i in sorted(calls)], text, finish


def test_a_named_tool_choice_gets_a_call_the_client_parses(client: openai.OpenAI) -> None:
    """The random tiny model writes a valid call only because decoding allows nothing else."""
    reply = _ask(client, tools=[WEATHER, TIME], tool_choice=NAMED, max_tokens=200)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert arguments["city"] in ("Paris", "Rome") and arguments["unit"] in ("celsius", "fahrenheit")

    required = _ask(client, tools=[TIME, WEATHER], tool_choice="required", max_tokens=200).choices[0]
    assert [c.function.name for c in required.message.tool_calls] in (["get_time"], ["get_weather"])

    # Streamed, the same call arrives as OpenAI sends one: its id and name, then its arguments.
    stream = client.chat.completions.create(
        model="m", messages=USER, temperature=0, tools=[WEATHER, TIME], tool_choice=NAMED, max_tokens=200, stream=True
    )  # type: ignore[call-overload]
    chunks = list(stream)
    headers = [d for c in chunks for d in c.choices[0].delta.tool_calls or [] if d.id]
    assert [h.function.arguments for h in headers] == [""]
    calls, text, finish = _streamed_calls(chunks)
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", arguments)]
    assert text == "" and finish == "tool_calls"


def test_tools_are_rendered_and_results_sent_back_by_the_template(client: openai.OpenAI, tooled: ChatModel) -> None:
    offered = _ask(client, tools=[WEATHER], max_tokens=1)
    assert offered.usage.prompt_tokens == len(tokenize_prompt(tooled.tokenizer, USER, [WEATHER]))
    call = _ask(client, tools=[WEATHER], tool_choice=NAMED, max_tokens=200).choices[0].message.tool_calls[0]
    conversation = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "18 C, sunny"},
    ]
    answer = client.chat.completions.create(
        model="m", messages=conversation, tools=[WEATHER], max_tokens=1, temperature=0
    )  # type: ignore[arg-type]
    # The call as the template renders it (arguments as an object) and the result in its <tool_response> turn.
    rendered = [
        *USER,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "type": "function",
                    "id": call.id,
                    "function": {"name": "get_weather", "arguments": json.loads(call.function.arguments)},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "18 C, sunny"},
    ]
    prompt = tokenize_prompt(tooled.tokenizer, rendered, [WEATHER])
    assert answer.usage.prompt_tokens == len(prompt)
    assert "<tool_response>\n18 C, sunny\n</tool_response>" in tooled.tokenizer.decode(prompt)


def test_langchain_bind_tools_gets_the_call(client: openai.OpenAI) -> None:
    from langchain_core.messages import AIMessageChunk
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(base_url=str(client.base_url), api_key="none", model="m", max_tokens=200, temperature=0)  # type: ignore[arg-type]
    bound = chat.bind_tools([WEATHER], tool_choice="get_weather")
    message = bound.invoke("Weather in Paris?")
    (call,) = message.tool_calls
    assert call["name"] == "get_weather" and call["args"]["city"] in ("Paris", "Rome") and call["id"]
    streamed: AIMessageChunk | None = None
    for chunk in bound.stream("Weather in Paris?"):
        streamed = chunk if streamed is None else streamed + chunk  # type: ignore[assignment]
    assert streamed is not None and [(c["name"], c["args"]) for c in streamed.tool_calls] == [
        (call["name"], call["args"])
    ]


def test_calls_the_model_chooses_to_write_are_read_back(scripted: tuple[Scripted, openai.OpenAI]) -> None:
    model, client = scripted
    said = (
        'Checking both.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n'
        '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    )
    model.script[:] = [said, said, said]
    whole = _ask(client, tools=[WEATHER, TIME]).choices[0]
    assert whole.finish_reason == "tool_calls" and whole.message.content == "Checking both."
    expected = [("get_weather", {"city": "Paris", "unit": "celsius"}), ("get_time", {})]
    assert [(c.function.name, json.loads(c.function.arguments)) for c in whole.message.tool_calls] == expected

    calls, text, finish = _streamed_calls(_ask(client, tools=[WEATHER, TIME], stream=True))
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == expected and finish == "tool_calls"
    assert text.strip() == "Checking both." and len({c["id"] for c in calls}) == 2

    # parallel_tool_calls false: the reply ends with its first call.
    one = _ask(client, tools=[WEATHER, TIME], parallel_tool_calls=False).choices[0]
    assert [c.function.name for c in one.message.tool_calls] == ["get_weather"]


def test_a_call_that_does_not_parse_is_given_back_as_text(scripted: tuple[Scripted, openai.OpenAI]) -> None:
    model, client = scripted
    broken = 'Sure <tool_call>\n{"name": "get_weather", "arguments": {"city": Paris}}\n</tool_call>'
    model.script[:] = [broken, "Plain answer, no call."]
    choice = _ask(client, tools=[WEATHER]).choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason == "stop"
    assert choice.message.content.startswith("Sure") and '"city": Paris' in choice.message.content
    assert _ask(client, tools=[WEATHER]).choices[0].message.content == "Plain answer, no call."


@pytest.mark.parametrize("pieces", [1, 3, 1000])
def test_the_reader_reads_streamed_pieces_as_the_whole(pieces: int) -> None:
    said = 'A<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}}\n</tool_call>B'
    reader = CallReader(HERMES, "", [WEATHER])
    text = "".join(reader.feed(said[i : i + pieces])[0] for i in range(0, len(said), pieces)) + reader.finish()[0]
    assert text == "AB" and [c.name for c in reader.calls] == ["get_weather"]
    assert json.loads(reader.calls[0].arguments) == {"city": "Rome", "unit": "celsius"}


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "f"}}},
            "tool_choice",
            "not among",
        ),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format", "combined"),
        ({"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools[0].type", "function"),
        ({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}, "tools[0].function.name", "pattern"),
    ],
)
def test_tool_fields_that_cannot_be_honoured_are_refused_by_name(
    client: openai.OpenAI, extra: dict[str, Any], param: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/chat/completions", body={"model": "m", "messages": USER, **extra}, cast_to=object)
    error = caught.value.response.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_a_model_whose_template_renders_no_tools_refuses_them(plain: ChatModel) -> None:
    model = ChatModel("m", plain.model, plain.tokenizer)
    with serving(create_app(model, max_new_tokens=4)) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
        with pytest.raises(openai.BadRequestError) as caught:
            _ask(client, tools=[WEATHER])
        assert caught.value.body["param"] == "tools" and "renders no tools" in caught.value.body["message"]  # type: ignore[index]
        history = [*USER, {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}]
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="m", messages=history)  # type: ignore[arg-type]
        assert caught.value.body["param"] == "messages"  # type: ignore[index]
        assert _ask(client, tools=[WEATHER], tool_choice="none", max_tokens=2).choices[0].message.tool_calls is None
