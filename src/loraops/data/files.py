"""Read data files (JSONL, JSON, Parquet, CSV) record by record, with errors that name the file and line.

JSON is parsed here, value by value, so an error names the record's own line rather than
"line 1, column 1"; Parquet and CSV go through the `datasets` library and are numbered by row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraops.errors import DataError, Problems

_BOM = b"\xef\xbb\xbf"
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
# Files in data folders that describe datasets rather than hold records (LLaMA-Factory's registry).
NOT_DATA = ("dataset_info.json",)
CONVERTED_SUFFIX = ".converted.jsonl"  # what `loraops convert` writes next to an export


def is_data_file(path: Path) -> bool:
    """A file training reads: a data suffix, not a registry, and not an export `convert` already turned into JSONL."""
    if path.suffix not in DATA_SUFFIXES or path.name in NOT_DATA:
        return False
    return not (path.suffix == ".json" and path.with_name(path.name.rsplit(".", 1)[0] + CONVERTED_SUFFIX).is_file())


def read_records(path: Path, problems: Problems | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line or row number, object) for each record of a data file, whatever its type. With `problems`, a
    JSONL line that is not a record is added there and reading goes on with the next line."""
    if path.suffix == ".json":
        return read_json(path)
    if path.suffix in (".parquet", ".csv"):
        return read_table(path)
    return read_jsonl(path, problems)


def read_json(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The records of a .json file, each with the line it starts on: the rule `convert` follows too."""
    try:
        text = path.read_bytes().removeprefix(_BOM).decode("utf-8")
    except OSError as exc:
        raise DataError(path, None, f"cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DataError(path, text_line(path, exc.start), f"not valid UTF-8 (byte {exc.start})") from None
    values = json_values(path, text)
    if any(is_chatgpt_export(v.value) for v in values):
        raise DataError(
            path,
            None,
            f"this is a ChatGPT export; turn it into JSONL first: loraops convert {path.parent} (make convert)",
        )
    if len(values) == 1 and is_dataset_registry(values[0].value):
        names = ", ".join(sorted({str(e.get("file_name", "?")) for e in values[0].value.values()}))
        raise DataError(
            path,
            None,
            "this is a dataset registry like LLaMA-Factory's dataset_info.json (names -> files), not records: "
            f"select the files it names ({names}) with dataset_pattern, or name it dataset_info.json "
            "to have it skipped",
        )
    for line, value in json_records(values):
        value = as_record(value)
        if not isinstance(value, dict):
            raise DataError(path, line, f"expected a JSON object, got {type(value).__name__}")
        check_encodable(value, path, line)
        yield line, value


def as_record(value: Any) -> Any:
    """A bare list of turns (a line that is `[{"role": ...}, ...]`) as the conversation it is."""
    if isinstance(value, list) and value and all(isinstance(t, dict) and ("role" in t or "from" in t) for t in value):
        return {"messages": value}
    return value


# Where a LLaMA-Factory `dataset_info.json` entry says its data lives: such a file describes datasets, it is not one.
_REGISTRY_KEYS = {"file_name", "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name"}


def is_dataset_registry(value: Any) -> bool:
    """A name -> {file_name, formatting, columns, ...} map (LLaMA-Factory's dataset_info.json): metadata.

    Judged by shape, not by name, so a renamed registry is recognised too; no training record looks like this,
    since every field of one holds text or a list of turns, never an object naming a file."""
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(entry, dict) and bool(_REGISTRY_KEYS & entry.keys()) for entry in value.values())
    )


def is_chatgpt_export(value: Any) -> bool:
    """A list of conversations with a `mapping` tree each: what ChatGPT's data export holds."""
    return isinstance(value, list) and bool(value) and all(isinstance(c, dict) and "mapping" in c for c in value)


def text_line(path: Path, offset: int) -> int:
    return path.read_bytes()[:offset].count(b"\n") + 1


@dataclass(frozen=True)
class JsonValue:
    """A top-level value of a JSON file, with the line it starts on (and, for an array, each item's)."""

    line: int
    value: Any
    item_lines: list[int] | None = None


def json_records(values: list[JsonValue]) -> list[tuple[int, Any]]:
    """The file's records: every item of its top-level arrays and every other top-level value, in order."""
    return [
        pair
        for v in values
        for pair in (zip(v.item_lines, v.value) if v.item_lines is not None else [(v.line, v.value)])
    ]


def json_values(path: Path, text: str) -> list[JsonValue]:
    """Every top-level JSON value in `text`: one, several one after another (JSON Lines), arrays among them.

    One pass: each line number is counted from the previous one, so a 60k-record array reads in linear time."""
    decoder, lines, values = json.JSONDecoder(), _Lines(text), list[JsonValue]()
    pos = _skip(text, 0)
    while pos < len(text):
        if text[pos] == "[":
            line, (items, pos) = lines.at(pos), _array_items(path, decoder, text, pos + 1, lines)
            values.append(JsonValue(line, [value for _, value in items], [n for n, _ in items]))
        else:
            (line, value), pos = _decode(path, decoder, text, pos, lines)
            values.append(JsonValue(line, value))
        pos = _skip(text, pos)
    return values


class _Lines:
    """Line numbers of increasing positions in a text, each counted from the last."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.line = text, 0, 1

    def at(self, pos: int) -> int:
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


def _array_items(
    path: Path, decoder: json.JSONDecoder, text: str, pos: int, lines: _Lines
) -> tuple[list[tuple[int, Any]], int]:
    """The items of a top-level array starting after its `[`, each with its own line; and where the array ends."""
    items = list[tuple[int, Any]]()
    pos = _skip(text, pos)
    if pos < len(text) and text[pos] == "]":
        return items, pos + 1
    while True:
        item, pos = _decode(path, decoder, text, pos, lines)
        items.append(item)
        pos = _skip(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _skip(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            return items, pos + 1
        raise DataError(path, lines.at(pos), "invalid JSON: expected `,` or `]` after an array item")


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _decode(path: Path, decoder: json.JSONDecoder, text: str, pos: int, lines: _Lines) -> tuple[tuple[int, Any], int]:
    line = lines.at(pos)
    try:
        value, end = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise DataError(path, line, "the JSON is nested too deeply to read") from None
    return (line, value), end


def read_table(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a Parquet or CSV file, through `datasets`, numbered from 1."""
    import datasets

    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # a bar per local file tells a user nothing
    try:
        table = (
            datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
            if path.suffix == ".parquet"
            else datasets.Dataset.from_csv(str(path), keep_in_memory=True)
        )
    except Exception as exc:  # pyarrow and pandas raise many kinds; each means the file cannot be read
        raise DataError(
            path, None, f"cannot read the {path.suffix[1:]} file: {' '.join(str(exc).split())[:300]}"
        ) from None
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    for row, record in enumerate(table, start=1):
        yield row, {k: v for k, v in record.items() if v is not None}


def read_jsonl(path: Path, problems: Problems | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a UTF-8 BOM and CRLF are accepted. A broken line
    raises, or with `problems` is added there and skipped."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise DataError(path, None, f"cannot read the file: {exc.strerror or exc}") from None
    with fh:
        for number, raw in enumerate(fh, start=1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            try:
                obj = parse_line(path, number, raw)
            except DataError as exc:
                if problems is None:
                    raise
                problems.add(exc)
                continue
            if obj is not None:
                yield number, obj


def parse_line(path: Path, number: int, raw: bytes) -> dict[str, Any] | None:
    """One JSONL line as an object (None if blank); every way it can be broken is a DataError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            path, number, f"not valid UTF-8 (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})"
        ) from None
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, number, f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise DataError(path, number, "the JSON is nested too deeply to read") from None
    obj = as_record(obj)
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
