"""Turn records in the supported formats into chat messages.

Formats: `messages` (OpenAI-style chat), `prompt_completion`, `instruction`
(Alpaca: instruction, optional input, output) and `auto` (detected per record).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraops.errors import DataError

ROLES = ("system", "user", "assistant")
Message = dict[str, str]


@dataclass(frozen=True)
class Example:
    """One record as chat messages, with where it came from."""

    messages: list[Message]
    format: str
    path: str
    line: int


def detect_format(record: dict[str, Any]) -> str | None:
    if "messages" in record:
        return "messages"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "instruction" in record and "output" in record:
        return "instruction"
    return None


def _text(record: dict[str, Any], key: str, where: tuple[Path, int], optional: bool = False) -> str | None:
    if key not in record or (optional and record[key] is None):
        if optional:
            return None
        raise DataError(*where, f"missing field `{key}`")
    value = record[key]
    if not isinstance(value, str):
        raise DataError(*where, f"field `{key}` must be a string, got {type(value).__name__}")
    return value


def _with_system(record: dict[str, Any], where: tuple[Path, int], turns: list[Message]) -> list[Message]:
    system = _text(record, "system", where, optional=True)
    return ([{"role": "system", "content": system}] if system else []) + turns


def _from_messages(record: dict[str, Any], where: tuple[Path, int]) -> list[Message]:
    if "messages" not in record:
        raise DataError(*where, "missing field `messages`")
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError(*where, "field `messages` must be a non-empty list")
    out: list[Message] = []
    for i, message in enumerate(messages):
        field = f"messages[{i}]"
        if not isinstance(message, dict):
            raise DataError(*where, f"`{field}` must be an object with `role` and `content`")
        role = message.get("role")
        if role not in ROLES:
            raise DataError(*where, f"`{field}.role` is {role!r}; expected one of {', '.join(ROLES)}")
        content = message.get("content")
        if not isinstance(content, str):
            raise DataError(*where, f"`{field}.content` must be a string, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    return out


def _from_prompt_completion(record: dict[str, Any], where: tuple[Path, int]) -> list[Message]:
    prompt, completion = _text(record, "prompt", where), _text(record, "completion", where)
    return _with_system(record, where, [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}])  # type: ignore[dict-item]


def _from_instruction(record: dict[str, Any], where: tuple[Path, int]) -> list[Message]:
    instruction, output = _text(record, "instruction", where), _text(record, "output", where)
    extra = _text(record, "input", where, optional=True)
    prompt = f"{instruction}\n\n{extra}" if extra else instruction
    return _with_system(record, where, [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}])  # type: ignore[dict-item]


_CONVERTERS = {
    "messages": _from_messages,
    "prompt_completion": _from_prompt_completion,
    "instruction": _from_instruction,
}


def to_example(record: dict[str, Any], data_format: str, path: Path, line: int) -> Example:
    """Convert one record; raise DataError naming file, line and field when it does not fit."""
    where = (path, line)
    fmt = detect_format(record) if data_format == "auto" else data_format
    if fmt is None:
        keys = ", ".join(sorted(record)) or "none"
        raise DataError(
            path, line,
            f"cannot tell the format (fields: {keys}); expected `messages`, "
            "`prompt`+`completion`, or `instruction`+`output`",
        )  # fmt: skip
    messages = _CONVERTERS[fmt](record, where)
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(path, line, "the conversation has no assistant turn, so nothing to learn")
    first = next(i for i, m in enumerate(messages) if m["role"] != "system")
    if messages[first]["role"] == "assistant":
        raise DataError(path, line, f"the conversation starts with an assistant turn (messages[{first}]); "
                                    "add the user turn it answers")  # fmt: skip
    return Example(messages=messages, format=fmt, path=str(path), line=line)
