"""Evaluation splits: one JSONL file per split, prompt/completion or messages form."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from loraops.config import EvalConfig
from loraops.data.files import is_data_file, read_records
from loraops.data.formats import PAIRS, Example, FormatOptions, Message, is_preference, to_example
from loraops.errors import DataError


@dataclass(frozen=True)
class EvalExample:
    prompt: list[Message]  # everything before the last assistant turn
    reference: str  # the last assistant turn; a pair's chosen answer
    path: str
    line: int
    rejected: str | None = None  # a pair's rejected answer: scored by log-likelihood, not generated


def as_eval_example(example: Example) -> EvalExample:
    """The conversation up to its last assistant turn is the prompt; that turn is the reference."""
    messages = example.messages
    if example.is_pair:
        answer = messages[example.answer_from :]
        return EvalExample(example.prompt, _text(answer), example.path, example.line, _text(list(example.rejected)))
    if example.is_text:
        raise DataError(example.path, example.line, "a raw `text` record has no question and answer to evaluate")
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")  # a user turn comes first
    return EvalExample(messages[:last], messages[last]["content"], example.path, example.line)


def _text(turns: list[Message]) -> str:
    return "\n\n".join(m["content"] for m in turns)


def load_split(path: Path, options: FormatOptions | None = None) -> list[EvalExample]:
    """Read one split with the training data's validation; the last assistant turn is the reference. A split
    whose first record is a preference pair is a preference split: every record must be one."""
    options = options or FormatOptions()
    records = list(read_records(path))
    pairs = bool(records) and is_preference(records[0][1], options.columns)
    options = replace(options, preference=PAIRS if pairs else "chosen" if options.preference == "chosen" else "refuse")
    examples = [as_eval_example(to_example(record, options, path, line)) for line, record in records]
    if not examples:
        raise DataError(path, None, "the eval split is empty (no records)")
    return examples


def find_splits(eval_dir: str, pattern: str, only: list[str] | None = None) -> dict[str, Path]:
    """Split name (file stem) -> file, sorted; `only` keeps the named splits and checks they exist."""
    root = Path(eval_dir)
    found = {p.stem: p for p in sorted(root.glob(pattern)) if p.is_file() and is_data_file(p)}
    if not found:
        raise DataError(root, None, f"no eval files match {pattern!r}")
    if only:
        missing = sorted(set(only) - set(found))
        if missing:
            raise DataError(root, None, f"no eval split named {', '.join(missing)} (have: {', '.join(found)})")
        found = {name: found[name] for name in only}
    return found


def configured_splits(cfg: EvalConfig) -> dict[str, list[EvalExample]]:
    """The splits an eval config names, read and checked (every data error before any model loads)."""
    options = FormatOptions(
        cfg.data_format, dict(cfg.columns or {}), cfg.system_prompt, prompt_completion=cfg.prompt_completion
    )
    found = find_splits(cfg.eval_dir, cfg.eval_pattern, cfg.splits)
    return {name: load_split(path, options)[: cfg.limit] for name, path in found.items()}
