"""One conversation's turns, from the shapes people's data gives them in, to chat-template messages.

Shapes: OpenAI chat (`role`/`content`, content as a string or a list of parts, `weight`,
`tool_calls` and `tool` turns) and ShareGPT (`from`/`value`, with `function_call` and
`observation` turns). Either way the result is a list of messages `apply_chat_template` takes,
and the indices of assistant turns that must not be trained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]
ROLES = ("system", "user", "assistant", "tool")
# ShareGPT speaker names, as in the public datasets and LLaMA-Factory's reader.
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}


class RecordProblem(ValueError):
    """What is wrong with a record; the caller adds its file and line."""


class NonText(RecordProblem):
    """The record holds images, audio or other non-text parts: refused, or skipped with skip_non_text."""


@dataclass
class Turns:
    messages: list[Message] = field(default_factory=list)
    untrained: set[int] = field(default_factory=set)  # assistant turns kept as context only (weight 0)


def parse_turns(items: Any, key: str) -> Turns:
    """The messages of `record[key]`: a non-empty list of OpenAI- or ShareGPT-style turns."""
    if not isinstance(items, list) or not items:
        raise RecordProblem(f"field `{key}` must be a non-empty list of turns")
    turns = Turns()
    for i, item in enumerate(items):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise RecordProblem(f"`{where}` must be an object with `role` and `content` (or `from` and `value`)")
        message = _sharegpt_turn(item, where) if "from" in item else openai_turn(item, where)
        if message["role"] == "assistant" and _weight(item, where) == 0:
            turns.untrained.add(len(turns.messages))
        turns.messages.append(message)
    return turns


def openai_turn(item: dict[str, Any], where: str) -> Message:
    role = item.get("role")
    if role not in ROLES:
        raise RecordProblem(f"`{where}.role` is {role!r}; expected one of {', '.join(ROLES)}")
    message: Message = {
        "role": role,
        "content": content_text(item.get("content"), f"{where}.content", allow_empty=bool(item.get("tool_calls"))),
    }
    if item.get("tool_calls"):
        message["tool_calls"] = [
            _tool_call(call, f"{where}.tool_calls[{j}]") for j, call in enumerate(item["tool_calls"])
        ]
    for extra in ("tool_call_id", "name"):
        if isinstance(item.get(extra), str):
            message[extra] = item[extra]
    return message


def _sharegpt_turn(item: dict[str, Any], where: str) -> Message:
    speaker = item.get("from")
    role = SHAREGPT_ROLES.get(str(speaker).lower()) if isinstance(speaker, str) else None
    if role is None:
        raise RecordProblem(f"`{where}.from` is {speaker!r}; expected one of {', '.join(SHAREGPT_ROLES)}")
    value = content_text(item.get("value"), f"{where}.value")
    if speaker == "function_call":  # the call itself, as JSON text: {"name": ..., "arguments": {...}}
        return {"role": "assistant", "content": "", "tool_calls": [_tool_call(_json(value, where), where)]}
    return {"role": role, "content": value}


def content_text(content: Any, where: str, allow_empty: bool = False) -> str:
    """A turn's text: a string, or the text parts of a content-part list joined by newlines."""
    if content is None and allow_empty:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(isinstance(p, dict) and "type" in p for p in content):
        return "\n".join(_part_text(part, f"{where}[{j}]") for j, part in enumerate(content))
    label = f"field `{where}`" if where.isidentifier() else f"`{where}`"
    raise RecordProblem(
        f"{label} must be a string, got {type(content).__name__} "
        '(a list of {"type": "text", "text": ...} parts also works)'
    )


def _part_text(part: dict[str, Any], where: str) -> str:
    if part["type"] != "text":
        raise NonText(f"`{where}` is a {part['type']!r} part")
    if not isinstance(part.get("text"), str):
        raise RecordProblem(f"`{where}.text` must be a string")
    return str(part["text"])


def _weight(item: dict[str, Any], where: str) -> int:
    weight = item.get("weight", 1)
    if weight not in (0, 1):  # true and false count as 1 and 0
        raise RecordProblem(f"`{where}.weight` is {weight!r}; OpenAI's format allows 0 (not trained) or 1")
    return int(weight)


def _tool_call(call: Any, where: str) -> dict[str, Any]:
    """An OpenAI tool call with its arguments as an object: what chat templates expect to render."""
    function = call.get("function", call) if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise RecordProblem(f"`{where}` must be a tool call with a function `name` and `arguments`")
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        arguments = _json(arguments, f"{where}.arguments") if arguments.strip() else {}
    out = {"type": "function", "function": {"name": function["name"], "arguments": arguments}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def parse_tools(tools: Any) -> list[dict[str, Any]] | None:
    """A record's tool definitions (a list, or the JSON string ShareGPT data stores), in OpenAI's shape."""
    if tools in (None, "", []):
        return None
    if isinstance(tools, str):
        tools = _json(tools, "tools")
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise RecordProblem("field `tools` must be a list of function definitions")
    return [t if "type" in t else {"type": "function", "function": t} for t in tools]


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordProblem(f"`{where}` is not valid JSON ({exc.msg})") from None


def uses_tools(messages: list[Message]) -> bool:
    return any(m["role"] == "tool" or m.get("tool_calls") for m in messages)
