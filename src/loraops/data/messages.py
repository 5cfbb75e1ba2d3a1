"""One conversation's turns, from the shapes people's data gives them in, to chat-template messages.

Shapes: OpenAI chat (`role`/`content`, content as a string or a list of parts, `tool_calls` and
`tool` turns) and ShareGPT (`from`/`value`, with `function_call` and `observation` turns). Either
way the result is a list of messages `apply_chat_template` takes, the indices of assistant turns
that must not be trained, and the turn keys nothing here reads (for `check` to name).

A turn is kept out of training by OpenAI's `weight: 0`, XTuner's `loss: false` or LLaMA-Factory's
`loss_weight: 0.0`. An assistant turn's reasoning (`reasoning_content` as Qwen and DeepSeek write it,
`reasoning`, or gpt-oss's `thinking`) is kept as `reasoning_content`, for templates that render it.
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


# The role of a continuation's prompt (prompt_completion=continuation): text the completion goes on from,
# tokenized as it is, with no chat template around it.
PROMPT_ROLE = "prompt"
# Per-turn markers of "do not train this turn": OpenAI's, XTuner's and LLaMA-Factory's.
TRAIN_MARKERS = ("weight", "loss", "loss_weight")
REASONING = "reasoning_content"
REASONING_KEYS = (REASONING, "reasoning", "thinking")
OPENAI_TURN_KEYS = {"role", "content", "name", "tool_calls", "tool_call_id", "refusal", *TRAIN_MARKERS, *REASONING_KEYS}
SHAREGPT_TURN_KEYS = {"from", "value", *TRAIN_MARKERS}


# Content parts that are not text: a record holding one is multimodal (refused, or skipped with skip_non_text).
MEDIA_PARTS = {"image", "image_url", "input_image", "video", "video_url", "audio", "audio_url", "input_audio", "file"}


class RecordProblem(ValueError):
    """What is wrong with a record; the caller adds its file and line."""


class NonText(RecordProblem):
    """The record holds images, audio or other non-text parts: refused, or skipped with skip_non_text."""


@dataclass
class Turns:
    messages: list[Message] = field(default_factory=list)
    untrained: set[int] = field(default_factory=set)  # assistant turns kept as context only (weight 0)
    unread: set[str] = field(default_factory=set)  # turn keys nothing here reads


def parse_turns(items: Any, key: str) -> Turns:
    """The messages of `record[key]`: a non-empty list of OpenAI- or ShareGPT-style turns (or such a list
    written into one text cell, as CSV files and pandas hold them)."""
    if isinstance(items, str):
        items = _serialised(items, key)
    if not isinstance(items, list) or not items:
        raise RecordProblem(f"field `{key}` must be a non-empty list of turns")
    turns = Turns()
    for i, item in enumerate(items):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise RecordProblem(f"`{where}` must be an object with `role` and `content` (or `from` and `value`)")
        sharegpt = "from" in item
        message = _sharegpt_turn(item, where) if sharegpt else openai_turn(item, where)
        if not _trained(item, where) and message["role"] == "assistant":
            turns.untrained.add(len(turns.messages))
        turns.unread |= set(item) - (SHAREGPT_TURN_KEYS if sharegpt else OPENAI_TURN_KEYS)
        turns.messages.append(message)
    return turns


def _serialised(text: str, key: str) -> Any:
    """A list of turns written as text: JSON, or the Python form pandas writes (single quotes, None, True)."""
    import ast

    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise RecordProblem(
            f"field `{key}` is text, not a list of turns, and reads neither as JSON nor as a Python list; "
            "write the turns as a list (JSONL), or as JSON text in the cell"
        ) from None


def openai_turn(item: dict[str, Any], where: str) -> Message:
    role = item.get("role")
    if role not in ROLES:
        raise RecordProblem(f"`{where}.role` is {role!r}; expected one of {', '.join(ROLES)}")
    content, part_reasoning, part_calls = _special_parts(item.get("content"), f"{where}.content")
    calls = [_tool_call(call, f"{where}.tool_calls[{j}]") for j, call in enumerate(item.get("tool_calls") or [])]
    calls += part_calls
    message: Message = {"role": role, "content": content_text(content, f"{where}.content", allow_empty=bool(calls))}
    if calls:
        message["tool_calls"] = calls
    for extra in ("tool_call_id", "name"):
        if isinstance(item.get(extra), str):
            message[extra] = item[extra]
    reasoning = _reasoning(item, where) or part_reasoning
    if reasoning:
        message[REASONING] = reasoning
    return message


def _special_parts(content: Any, where: str) -> tuple[Any, str | None, list[dict[str, Any]]]:
    """LLaMA-Factory v1's `reasoning` and `tool_call` parts taken out of a content-part list: (the other
    parts, the reasoning, the calls). A tool_call part's `value` is the call as JSON text."""
    if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
        return content, None, []
    rest, reasoning, calls = [], [], []
    for j, part in enumerate(content):
        kind, value = part.get("type"), part.get("value", part.get("text"))
        if kind == "reasoning" and isinstance(value, str):
            reasoning.append(value)
        elif kind == "tool_call" and isinstance(value, str):
            calls.append(_tool_call(_json(value, f"{where}[{j}].value"), f"{where}[{j}]"))
        else:
            rest.append(part)
    return (rest or None), "\n".join(reasoning) or None, calls


def _reasoning(item: dict[str, Any], where: str) -> str | None:
    for key in REASONING_KEYS:
        value = item.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise RecordProblem(f"`{where}.{key}` must be a string (the turn's reasoning)")
        return value
    return None


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
    """A text part: OpenAI's {type: text, text}, or LLaMA-Factory v1's {type: text, value}."""
    if part["type"] in MEDIA_PARTS:
        raise NonText(f"`{where}` is a {part['type']!r} part")
    if part["type"] != "text":
        raise RecordProblem(
            f"`{where}` is a {part['type']!r} part, which loraops does not read here (text parts are read; tool "
            "calls as `tool_calls`, tool results as `tool` turns, reasoning as `reasoning_content`)"
        )
    key = "text" if "text" in part or "value" not in part else "value"
    if not isinstance(part.get(key), str):
        raise RecordProblem(f"`{where}.{key}` must be a string")
    return str(part[key])


def _trained(item: dict[str, Any], where: str) -> bool:
    """Whether the turn's markers (any of TRAIN_MARKERS) let it train; markers that disagree are refused."""
    says: dict[str, bool] = {}
    if "weight" in item:
        if item["weight"] not in (0, 1):  # true and false count as 1 and 0
            raise RecordProblem(f"`{where}.weight` is {item['weight']!r}; OpenAI's format allows 0 (not trained) or 1")
        says["weight"] = bool(item["weight"])
    if "loss" in item:
        if not isinstance(item["loss"], bool):
            raise RecordProblem(f"`{where}.loss` is {item['loss']!r}; XTuner's format allows true or false")
        says["loss"] = item["loss"]
    if "loss_weight" in item:
        if item["loss_weight"] not in (0, 1) or isinstance(item["loss_weight"], bool):
            raise RecordProblem(
                f"`{where}.loss_weight` is {item['loss_weight']!r}; loraops trains a turn fully (1.0) "
                "or not at all (0.0)"
            )
        says["loss_weight"] = bool(item["loss_weight"])
    if len(set(says.values())) > 1:
        told = ", ".join(f"{key}={item[key]!r}" for key in says)
        raise RecordProblem(f"`{where}` says both to train it and not to ({told}); keep one marker")
    return all(says.values())


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
