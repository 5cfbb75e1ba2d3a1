"""Tool calling through the model's own chat template: the request's tools are rendered into the prompt by the
template, and the calls the model writes are read back into OpenAI's `tool_calls` by transformers' response
parser, whole or as the reply streams.

The markup is the model's: a tokenizer that ships a `response_template` is parsed with it; a chat template that
writes calls as `<tool_call>` JSON `</tool_call>` (Hermes, Qwen2.5, SmolLM3 and the models fine-tuned on their
data) is parsed with HERMES below, the format vLLM's `hermes` parser reads. A forced call (tool_choice
`required` or a named function) is written by constrained decoding, which must know the markup: Hermes' only.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from loraops.data.tokenize import renders_tools
from loraops.structured import Grammars

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
# Content is every piece of text outside a call, joined: text before and after a call is one answer.
HERMES: dict[str, Any] = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open": HERMES_OPEN,
            "close": HERMES_CLOSE,
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {"content": "text", "repeats": True, "join": "", "content_args": {"strip": False}},
    },
}


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends arguments

    def openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ToolFormat:
    """How one model writes tool calls: the response template that reads them, and whether it is Hermes'
    (which constrained decoding can write, and which reads the reply alone, without the prompt before it)."""

    template: dict[str, Any]
    hermes: bool

    @classmethod
    def of(cls, tokenizer: Any) -> ToolFormat | None:
        """The model's tool-call format; None when its chat template renders no tools or its calls cannot be read."""
        if not renders_tools(tokenizer):
            return None
        own = getattr(tokenizer, "response_template", None)
        if isinstance(own, dict) and "tool_calls" in own.get("fields", {}):
            return cls(own, hermes=False)
        template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
        return cls(HERMES, hermes=True) if HERMES_OPEN in template else None

    @property
    def call_end(self) -> str | None:
        """The literal text that ends one call, if the format has one: a stop string that keeps a reply to one call."""
        close = self.template["fields"]["tool_calls"].get("close")
        return close if isinstance(close, str) else None

    def reader(self, tokenizer: Any, prompt_ids: list[int], tools: list[dict[str, Any]]) -> CallReader:
        """A reader of one reply; a template of the model's own reads the prompt too (it may open the turn)."""
        return CallReader(self.template, "" if self.hermes else tokenizer.decode(prompt_ids), tools)

    def forced(self, grammars: Grammars, tools: list[dict[str, Any]], name: str | None) -> Any:
        """The compiled grammar of one call: to the function `name`, or to any of `tools` (None)."""
        if not self.hermes:
            raise ValueError("forced calls are written in Hermes' markup only")
        chosen = [tool["function"] for tool in tools if name is None or tool["function"]["name"] == name]
        schemas = [_call_schema(function) for function in chosen]
        schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
        strict = all(function.get("strict") is not False for function in chosen)
        return grammars.json_between(HERMES_OPEN + "\n", schema, "\n" + HERMES_CLOSE, strict=strict)


def _call_schema(function: dict[str, Any]) -> dict[str, Any]:
    """A call as Hermes writes it: {"name": ..., "arguments": {...}}, the arguments held to the parameters."""
    return {
        "type": "object",
        "properties": {
            "name": {"const": function["name"]},
            "arguments": function.get("parameters") or {"type": "object", "properties": {}},
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


@dataclass
class CallReader:
    """Reads a reply as it is generated: `feed` returns the new answer text and the calls completed by that piece.

    A call the model wrote that does not parse (bad JSON, cut off by max_tokens) is given back as answer text,
    as vLLM does: the client sees what the model said rather than losing it.
    """

    template: dict[str, Any]
    prefix: str
    tools: list[dict[str, Any]]
    calls: list[ToolCall] = field(default_factory=list)
    content: str = ""
    reasoning: str = ""
    _pending: str = ""  # the text of the call being written, given back if it does not parse
    _failed: bool = False

    def __post_init__(self) -> None:
        from transformers.utils.chat_parsing import ResponseParser

        self._parser = ResponseParser(self.template, prefix=self.prefix, tools=list(self.tools))
        self._read(self._parser.initial_events)

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        if self._failed:
            self.content += text
            return text, []
        try:
            return self._read(self._parser.feed(text))
        except ValueError:
            return self._fail(text)

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The last answer text and calls, which only the end of the reply completes."""
        if self._failed:
            return "", []
        try:
            return self._read(self._parser.finalize()[1])
        except ValueError:
            return self._fail("")

    def message(self) -> dict[str, Any]:
        """The assistant message as OpenAI returns it: content None when the reply is only calls."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content.strip() or None}
        if self.reasoning.strip():
            message["reasoning_content"] = self.reasoning.strip()
        if self.calls:
            message["tool_calls"] = [call.openai() for call in self.calls]
        return message

    def _read(self, events: list[dict[str, Any]]) -> tuple[str, list[ToolCall]]:
        text, calls = "", []
        for event in events:
            kind, name = event["type"], event["field"]
            if kind == "region_chunk" and name == "content":
                text += event["text"]
            elif kind == "region_chunk" and name == "thinking":
                self.reasoning += event["text"]
            elif kind == "region_chunk" and name == "tool_calls":
                self._pending += event["text"]
            elif kind == "region_close" and name == "tool_calls":
                calls += _calls(event["value"])
                self._pending = ""
        self.content += text
        self.calls += calls
        return text, calls

    def _fail(self, text: str) -> tuple[str, list[ToolCall]]:
        self._failed = True
        given_back, self._pending = self._pending + text, ""
        self.content += given_back
        return given_back, []


def _calls(value: Any) -> list[ToolCall]:
    """The calls one closed region holds (a template may write several in one region)."""
    calls = []
    for item in value if isinstance(value, list) else [value]:
        function = item.get("function") if isinstance(item, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise ValueError(f"a tool call without a function name: {item!r}")
        arguments = function.get("arguments", {})  # type: ignore[union-attr]
        text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        calls.append(ToolCall(f"call_{uuid.uuid4().hex[:24]}", name, text))
    return calls
