"""`loraops convert`: turn pretty-printed JSON and ChatGPT exports into training JSONL.

A ChatGPT export (`conversations.json`) is a list of conversations, each a tree of message
nodes (`mapping`, linked by `parent`/`children`) whose visible branch ends at `current_node`;
edits and regenerations are sibling branches, which are dropped.

Each file is handled on its own: `convert_folder` reports a broken one as failed and goes on,
so one bad download does not hold back the rest of the folder.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loraops.atomic import ensure_folder, read_json, write_json, write_text_atomic, writing
from loraops.data.files import (
    CONVERTED_SUFFIX,
    JsonValue,
    check_encodable,
    is_chatgpt_export,
    is_dataset_registry,
    json_records,
    json_values,
    read_jsonl,
)
from loraops.data.formats import Message, to_example
from loraops.errors import DataError, LoraopsError, WriteError

OUTPUT_SUFFIX = CONVERTED_SUFFIX
LEDGER = ".loraops-converted"  # JSON: output name -> sha256 of what convert wrote there
_BROWSING_CONTENT = {"tether_browsing_display", "tether_quote", "system_error"}


@dataclass
class FileReport:
    path: Path
    action: str  # "skipped", "converted", "up to date", "failed"
    reason: str
    output: Path | None = None
    records: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    line: int | None = None  # where in `path` a failure is, so the report reads like the DataError did


class ExportShapeError(ValueError):
    """A field of a ChatGPT export has the wrong type; the message names the field."""


def _expect(value: Any, kind: type | tuple[type, ...], field: str) -> Any:
    if not isinstance(value, kind):
        names = " or ".join(_JSON_NAMES[k] for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ExportShapeError(f"`{field}` must be {names}, got {_JSON_NAMES.get(type(value), type(value).__name__)}")
    return value


_JSON_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    type(None): "null",
    int: "a number",
    float: "a number",
    bool: "true/false",
}


def _branch(conversation: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes from the root to `current_node`, following parent links (the visible branch)."""
    mapping = _expect(conversation["mapping"], dict, "mapping")
    for key, node in mapping.items():
        name = key if key.isidentifier() else json.dumps(key)  # a key of spaces or newlines stays visible
        _expect(node, dict, f"mapping.{name}")
        _expect(node.get("parent"), (str, type(None)), f"mapping.{name}.parent")
        _expect(node.get("message"), (dict, type(None)), f"mapping.{name}.message")
    node_id, seen = _expect(conversation.get("current_node"), (str, type(None)), "current_node"), set()
    if node_id is None:  # very old exports: take the last node that has no children
        node_id = next((k for k, n in reversed(list(mapping.items())) if not n.get("children")), None)
    chain = []
    while node_id is not None and node_id in mapping and node_id not in seen:
        seen.add(node_id)
        chain.append(mapping[node_id])
        node_id = mapping[node_id].get("parent")
    return chain[::-1]


def _message_text(message: dict[str, Any], counts: Counter[str]) -> str | None:
    """The text of a node's message, or None (counted by reason) when it is not a chat turn."""
    role = _expect(message.get("author") or {}, dict, "message.author").get("role")
    content = _expect(message.get("content") or {}, dict, "message.content")
    metadata = _expect(message.get("metadata") or {}, dict, "message.metadata")
    if role == "tool":
        counts["dropped tool messages"] += 1
        return None
    if role not in ("user", "assistant", "system"):
        counts[f"dropped {role or 'unknown'}-role messages"] += 1
        return None
    content_type = content.get("content_type")
    if (isinstance(content_type, str) and content_type in _BROWSING_CONTENT) or message.get(
        "recipient", "all"
    ) != "all":
        counts["dropped browsing and tool-call messages"] += 1
        return None
    if metadata.get("is_visually_hidden_from_conversation") or metadata.get("is_user_system_message"):
        counts["dropped hidden system messages"] += 1
        return None
    parts = _expect(
        content.get("parts") if "parts" in content else [content.get("text", "")],
        (list, type(None)),
        "message.content.parts",
    )
    texts = [p for p in parts or [] if isinstance(p, str)]
    if len(texts) < len(parts or []):
        counts["dropped non-text parts (images, files)"] += len(parts) - len(texts)
    text = "\n".join(t for t in texts if t.strip()).strip()
    if not text:
        counts[f"dropped empty {role} messages"] += 1
        return None
    return text


def _merge_turns(turns: list[Message]) -> list[Message]:
    """Join consecutive turns of one role: dropping tool calls can leave an assistant reply in pieces."""
    merged: list[Message] = []
    for turn in turns:
        if merged and merged[-1]["role"] == turn["role"]:
            merged[-1] = {"role": turn["role"], "content": merged[-1]["content"] + "\n\n" + turn["content"]}
        else:
            merged.append(dict(turn))
    return merged


def conversation_to_messages(conversation: dict[str, Any], counts: Counter[str]) -> list[Message] | None:
    """The visible branch as chat messages, or None (counted) when it has no assistant reply."""
    branch = _branch(conversation)
    counts["dropped off-branch nodes (edits, regenerations)"] += len(conversation["mapping"]) - len(branch)
    turns = []
    for node in branch:
        message = node.get("message")
        text = _message_text(message, counts) if message else None
        if message and text is not None:
            turns.append({"role": message["author"]["role"], "content": text})
    turns, trimmed = _trim_unanswered(_merge_turns(turns))
    if not any(t["role"] == "assistant" for t in turns) or not any(t["role"] == "user" for t in turns):
        counts["skipped conversations without an assistant reply"] += 1
        return None
    counts.update(trimmed)  # only for kept conversations: a skipped one is counted once, above
    return turns


def _trim_unanswered(turns: list[Message]) -> tuple[list[Message], Counter[str]]:
    """Drop the turns after the last assistant reply (a final unanswered question teaches nothing),
    counted by role so the report says how much of the export was cut."""
    trimmed: Counter[str] = Counter()
    while turns and turns[-1]["role"] != "assistant":
        trimmed[f"trailing {turns.pop()['role']} turns trimmed"] += 1
    return turns, trimmed


def _records_from_export(path: Path, conversations: list[dict[str, Any]], counts: Counter[str]) -> list[dict[str, Any]]:
    records = []
    for i, conversation in enumerate(conversations):
        try:
            messages = conversation_to_messages(conversation, counts)
        except ExportShapeError as exc:
            raise DataError(path, None, f"conversation {i} of the ChatGPT export: {exc}") from None
        if messages is not None:
            records.append(
                {
                    "messages": messages,
                    "title": conversation.get("title"),
                    "conversation_id": conversation.get("conversation_id") or conversation.get("id"),
                }
            )
    return records


def _records_from_json(path: Path, values: list[JsonValue]) -> list[dict[str, Any]]:
    """Plain records (objects and arrays of objects, as many as the file holds), each validated: the records
    training would read from the same file."""
    records = []
    for line, item in json_records(values):
        if not isinstance(item, dict):
            raise DataError(path, line, f"expected JSON objects, got {type(item).__name__}")
        check_encodable(item, path, line)
        to_example(item, "auto", path, line)  # same checks as training, with the object's line
        records.append(item)
    return records


def _valid_jsonl(path: Path) -> bool:
    try:
        records = list(read_jsonl(path))
        for line, record in records:
            to_example(record, "auto", path, line)
    except DataError:
        return False
    return bool(records)


def convert_file(path: Path, output_dir: Path, checked: bool = False) -> FileReport:
    """Convert one file; never touches the source, rewrites the output only when it changes. `checked`: the
    caller found it needs converting already (reading a JSONL file whole to find out is not free)."""
    if not checked and not needs_converting(path):
        return _already_jsonl(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(path, None, f"not valid UTF-8 (byte offset {exc.start})") from None
    except OSError as exc:
        raise DataError(path, None, f"cannot read the file: {exc.strerror or exc}") from None
    values = json_values(path, text)
    if len(values) == 1 and is_dataset_registry(values[0].value):
        return FileReport(path, "skipped", "not data: a dataset registry, like LLaMA-Factory's dataset_info.json")
    counts: Counter[str] = Counter()
    if len(values) == 1 and is_chatgpt_export(values[0].value):
        records, kind = _records_from_export(path, values[0].value, counts), "ChatGPT export"
    else:
        records, kind = _records_from_json(path, values), "pretty-printed JSON"
    if not records:
        return FileReport(path, "skipped", f"{kind} with no usable records", counts=counts)
    check_encodable(records, path, None)
    output = output_path(path, output_dir)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    unchanged = _write_output(path, output, body)
    action = "up to date" if unchanged else "converted"
    if path.suffix == ".jsonl":
        kind += "; move the source out of the training folder, it still matches *.jsonl"
    return FileReport(path, action, kind, output, len(records), counts)


def _already_jsonl(path: Path) -> FileReport:
    return FileReport(path, "skipped", "already JSONL in a supported format")


def needs_converting(path: Path) -> bool:
    return not (path.name.endswith(OUTPUT_SUFFIX) or (path.suffix == ".jsonl" and _valid_jsonl(path)))


def output_path(source: Path, output_dir: Path) -> Path:
    return output_dir / (source.name.rsplit(".", 1)[0] + OUTPUT_SUFFIX)


def _write_output(source: Path, output: Path, body: str) -> bool:
    """Write `body` to `output` unless it is there already (True); never replace a file convert did not
    write, or one edited since it wrote it: a ledger beside the outputs holds the hash of each one written."""
    ledger_path = output.parent / LEDGER
    ledger = read_json(ledger_path) if ledger_path.is_file() else {}
    data = body.encode("utf-8")
    if output.exists() or output.is_symlink():
        if not output.is_file():
            raise DataError(output, None, f"the output for {source.name} is in the way (not a file); move it away")
        current = output.read_bytes()
        if current == data:
            return True
        if ledger.get(output.name) != hashlib.sha256(current).hexdigest():
            raise DataError(
                output,
                None,
                f"exists and was not written by `loraops convert`, or was edited since; "
                f"move it away or delete it to convert {source.name} again",
            )
    write_text_atomic(output, body, "the converted file")
    try:
        with writing(ledger_path, f"{output.name}'s entry in the ledger"):
            write_json(ledger_path, {**ledger, output.name: hashlib.sha256(data).hexdigest()})
    except WriteError:
        # An output the ledger does not vouch for would block every rerun ("not written by convert"): remove it.
        output.unlink(missing_ok=True)
        raise
    return False


def convert_folder(input_dir: Path, output_dir: Path | None = None) -> list[FileReport]:
    """Convert every .json/.jsonl file in `input_dir` (not recursive); outputs go beside them by default."""
    if not input_dir.is_dir():
        raise LoraopsError(f"{input_dir}: not a folder")
    if output_dir is not None:
        ensure_folder(output_dir, f"--output-dir {output_dir}")
    paths = sorted(
        p for p in input_dir.iterdir() if p.is_file() and p.suffix in (".json", ".jsonl") and not p.name.startswith(".")
    )
    if not paths:
        raise LoraopsError(f"{input_dir}: no .json or .jsonl files to convert")
    output_dir = output_dir or input_dir
    pending = [p for p in paths if needs_converting(p)]  # each file read once to decide
    clashes = _clashes(pending, output_dir)
    return [
        clashes[p] if p in clashes else _convert_or_fail(p, output_dir) if p in pending else _already_jsonl(p)
        for p in paths
    ]


def _clashes(paths: list[Path], output_dir: Path) -> dict[Path, FileReport]:
    """Failures for sources that would convert to the same output (`x.json` and a pretty-printed `x.jsonl`):
    converting both would keep one and drop the other, and training would then skip the dropped one."""
    by_output: dict[Path, list[Path]] = {}
    for path in paths:
        by_output.setdefault(output_path(path, output_dir), []).append(path)
    reports = {}
    for output, sources in by_output.items():
        if len(sources) > 1:
            names = " and ".join(p.name for p in sources)
            for path in sources:
                reason = f"{names} would both convert to {output.name}; rename one of them and convert again"
                reports[path] = FileReport(path, "failed", reason)
    return reports


def _convert_or_fail(path: Path, output_dir: Path) -> FileReport:
    """One file's report; its failure is reported rather than raised, so the rest of the folder still converts.
    Outputs are only ever replaced atomically and after every check, so a failed file leaves nothing half-written."""
    try:
        return convert_file(path, output_dir, checked=True)
    except (LoraopsError, OSError) as exc:  # OSError: a file the system refused (permissions, a full disk)
        return _failure(path, output_path(path, output_dir), exc)


def _failure(path: Path, output: Path, exc: Exception) -> FileReport:
    if isinstance(exc, DataError) and exc.path == str(path):
        line, reason = exc.line, exc.problem  # the report line already names the file
    else:
        line, reason = None, str(exc)
    about_output = isinstance(exc, (DataError, WriteError)) and exc.path == str(output)
    if output.is_file() and not about_output:  # say so, or the stale records would train unnoticed
        reason += f"; the earlier {output.name} is left as it was"
    return FileReport(path, "failed", reason, line=line)


def format_reports(reports: list[FileReport]) -> str:
    lines = []
    for r in reports:
        where = f"{r.path}:{r.line}" if r.line is not None else str(r.path)
        head = f"{where}: {r.action} ({r.reason})"
        if r.output is not None:
            head += f" -> {r.output}, {r.records} records"
        lines.append(head)
        # a zero says nothing happened: only what actually changed is listed
        lines += [f"    {n} {reason}" for reason, n in sorted(r.counts.items()) if n > 0]
    return "\n".join(lines)


def failed(reports: list[FileReport]) -> list[FileReport]:
    return [r for r in reports if r.action == "failed"]
