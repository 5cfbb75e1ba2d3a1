"""Read JSONL files line by line, with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loraops.errors import DataError

_BOM = b"\xef\xbb\xbf"


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a UTF-8 BOM and CRLF are accepted."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise DataError(path, None, f"cannot read the file: {exc.strerror or exc}") from None
    with fh:
        for number, raw in enumerate(fh, start=1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            obj = parse_line(path, number, raw)
            if obj is not None:
                yield number, obj


def parse_line(path: Path, number: int, raw: bytes) -> dict[str, Any] | None:
    """One JSONL line as an object (None if blank); every way it can be broken is a DataError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(path, number, f"not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from None
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, number, f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise DataError(path, number, "the JSON is nested too deeply to read") from None
    if not isinstance(obj, dict):
        raise DataError(path, number, f"expected a JSON object, got {type(obj).__name__}")
    check_encodable(obj, path, number)
    return obj


def check_encodable(obj: Any, path: Path, line: int | None) -> None:
    """Refuse text no tokenizer can take: JSON's \\uD800-style escapes can encode lone surrogates."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end].encode("unicode_escape").decode()
        raise DataError(path, line, f"a string holds a lone UTF-16 surrogate ({bad}), which is not text") from None
    except RecursionError:
        raise DataError(path, line, "the JSON is nested too deeply to read") from None
