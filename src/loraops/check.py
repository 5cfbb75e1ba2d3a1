"""`loraops check`: what the model would be trained on, without training."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraops.config import TrainConfig
from loraops.data.formats import Example
from loraops.data.sources import load_examples, resolve_training_files
from loraops.data.tokenize import IGNORE_INDEX, Encoded, encode, ensure_chat_template
from loraops.models import load_tokenizer, resolve_model_path

TRAIN_OPEN, TRAIN_CLOSE = "[[", "]]"


@dataclass
class CheckReport:
    files: dict[str, Counter[str]]  # file -> records per format
    lengths: list[int]  # tokens per example before truncation
    max_length: int
    truncated: int
    all_masked: int
    tokens: int  # after truncation
    trained_tokens: int
    example: str  # one example rendered with its trained spans marked
    example_source: str


def render_marked(tokenizer: Any, enc: Encoded) -> str:
    """The token sequence as text, trained spans wrapped in [[ ]]; everything else is masked."""
    pieces, run, trained = [], [], False
    for token, label in zip(enc.input_ids, enc.labels):
        is_trained = label != IGNORE_INDEX
        if run and is_trained != trained:
            pieces.append(_wrap(tokenizer.decode(run), trained))
            run = []
        run.append(token)
        trained = is_trained
    if run:
        pieces.append(_wrap(tokenizer.decode(run), trained))
    return "".join(pieces)


def _wrap(text: str, trained: bool) -> str:
    return f"{TRAIN_OPEN}{text}{TRAIN_CLOSE}" if trained else text


def check(cfg: TrainConfig, example_index: int = 0) -> CheckReport:
    """Validate config and data exactly as `train` does, and describe the encoded dataset."""
    files = resolve_training_files(cfg).files
    examples = load_examples(files, cfg.data_format)
    tokenizer = load_tokenizer(resolve_model_path(cfg.model_name))
    ensure_chat_template(tokenizer)
    encoded = [encode(tokenizer, e.messages, cfg.max_length) for e in examples]
    index = min(example_index, len(examples) - 1)
    shown: Example = examples[index]
    return CheckReport(
        files=_formats_per_file(examples),
        lengths=[e.original_length for e in encoded],
        max_length=cfg.max_length,
        truncated=sum(e.truncated for e in encoded),
        all_masked=sum(e.trained_tokens == 0 for e in encoded),
        tokens=sum(len(e.input_ids) for e in encoded),
        trained_tokens=sum(e.trained_tokens for e in encoded),
        example=render_marked(tokenizer, encoded[index]),
        example_source=f"{shown.path}:{shown.line} ({shown.format})",
    )


def _formats_per_file(examples: list[Example]) -> dict[str, Counter[str]]:
    files: dict[str, Counter[str]] = {}
    for e in examples:
        files.setdefault(e.path, Counter())[e.format] += 1
    return files


def format_report(r: CheckReport) -> str:
    lines = ["records per file and format:"]
    for path, formats in r.files.items():
        detail = ", ".join(f"{n} {fmt}" for fmt, n in sorted(formats.items()))
        lines.append(f"  {Path(path)}: {sum(formats.values())} ({detail})")
    p95 = statistics.quantiles(r.lengths, n=20)[-1] if len(r.lengths) > 1 else r.lengths[0]
    lines += [
        f"examples: {len(r.lengths)}",
        f"tokens per example: min {min(r.lengths)}, median {statistics.median(r.lengths):g}, "
        f"p95 {p95:g}, max {max(r.lengths)}",
        f"truncated at max_length={r.max_length}: {r.truncated}",
        f"all labels masked (would be dropped): {r.all_masked}",
        f"trained (assistant) tokens: {r.trained_tokens} of {r.tokens} ({100 * r.trained_tokens / max(1, r.tokens):.1f}%)",
        "",
        f"example {r.example_source}, as the model sees it ({TRAIN_OPEN} {TRAIN_CLOSE} = trained, the rest is masked):",
        r.example,
    ]  # fmt: skip
    return "\n".join(lines)
