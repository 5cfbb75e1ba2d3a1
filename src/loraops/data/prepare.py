"""The data step: find, read, validate and encode the training data, and count what happened.

`train` and `check` both call `prepare_data`, so what `check` reports is what training gets.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from loraops.data.datafiles import DataFile
from loraops.data.formats import PRESETS, Example
from loraops.data.overlap import conversation_key, duplicates
from loraops.data.packing import pack_rows, packing_stats
from loraops.data.pairs import EncodedPair, encode_preference
from loraops.data.sources import format_options, load_examples, resolve_training_files
from loraops.data.tokenize import (
    Encoded,
    encode,
    encode_continuation,
    encode_text,
    ensure_chat_template,
    reasoning_key,
    renders_tools,
)
from loraops.data.validation import select_validation
from loraops.errors import ConfigError, DataError, LoraopsError, Problems
from loraops.models import context_length

if TYPE_CHECKING:
    from loraops.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class DataStats:
    """What went into training; stored in the run's metrics and shown by `check`."""

    records: int = 0
    examples: int = 0  # records that train: at least one label left after truncation
    truncated: int = 0
    dropped_all_masked: int = 0
    tokens: int = 0  # of the examples that train, after truncation
    trained_tokens: int = 0
    formats: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0  # records that repeat an earlier record (whitespace aside): they weigh double
    deduplicated: int = 0  # of those, dropped by dedup=true
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> records left out on purpose
    files: dict[str, dict[str, int]] = field(default_factory=dict)  # file -> records per format
    lengths: dict[str, float] = field(default_factory=dict)  # min, median, p95, max before truncation
    packing: dict[str, Any] | None = None  # examples, rows, capacity, fill; None: one example per row
    notes: dict[str, int] = field(default_factory=dict)  # what was made of records (an empty system turn...)
    unread_keys: dict[str, int] = field(default_factory=dict)  # turn key loraops does not read -> records
    # file:line of the first records with no trained token left, and why (the answer is past max_length...)
    dropped_where: list[str] = field(default_factory=list)
    cut_answers: int = 0  # examples that train, but whose last answer max_length cut
    # Preference methods: pairs (a chosen and a rejected answer) and labelled answers (KTO) that train.
    preference: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EncodedSet:
    examples: list[Example]  # every record, in file order
    encoded: Sequence[Encoded | EncodedPair]  # one per example (pairs: for the preference methods)
    rows: list[dict[str, Any]]  # what the Trainer gets: the examples with a trained token
    stats: DataStats


@dataclass
class ValidationData(EncodedSet):
    source: dict[str, Any] = field(default_factory=dict)  # a file, or the held-out records: for the manifest


@dataclass
class PreparedData(EncodedSet):
    files: list[DataFile] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)  # where the files came from, for the manifest
    template_added: bool = False  # the tokenizer had no chat template, so the ChatML fallback was added
    validation: ValidationData | None = None  # None: no validation during training


def length_summary(lengths: list[int]) -> dict[str, float]:
    """min, median, p95 and max; the p95 is interpolated within the data, never beyond its maximum."""
    p95 = statistics.quantiles(lengths, n=20, method="inclusive")[-1] if len(lengths) > 1 else lengths[0]
    return {"min": min(lengths), "median": statistics.median(lengths), "p95": round(p95, 1), "max": max(lengths)}


def _statistics(examples: list[Example], encoded: Sequence[Encoded | EncodedPair]) -> DataStats:
    kept = [e for e in encoded if e.trained_tokens]
    files: dict[str, Counter[str]] = {}
    for example in examples:
        files.setdefault(example.path, Counter())[example.format] += 1
    return DataStats(
        records=len(examples),
        examples=len(kept),
        truncated=sum(e.truncated for e in encoded),
        dropped_all_masked=len(encoded) - len(kept),
        tokens=sum(e.tokens for e in kept),
        trained_tokens=sum(e.trained_tokens for e in kept),
        formats=dict(Counter(e.format for e in examples)),
        duplicates=duplicates(e.messages for e in examples),
        files={path: dict(counts) for path, counts in files.items()},
        lengths=length_summary([e.original_length for e in encoded]),
        notes=dict(Counter(note for e in examples for note in e.notes)),
        unread_keys=dict(Counter(key for e in examples for key in e.unread)),
        dropped_where=[_why_dropped(x, e) for x, e in zip(examples, encoded) if not e.trained_tokens][:SHOWN],
        cut_answers=sum(1 for e in kept if e.answer_cut),
    )


SHOWN = 5  # records named in a report line before the rest are only counted


def _why_dropped(example: Example, enc: Encoded | EncodedPair) -> str:
    where = f"{example.path}:{example.line}"
    if enc.truncated:
        return f"{where} ({enc.original_length} tokens; its answers start past max_length)"
    return f"{where} (no assistant turn is trained: weight 0, loss false or loss_weight 0 on every one)"


def _row(enc: Encoded) -> dict[str, Any]:
    ids = enc.input_ids
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": enc.labels, "length": len(ids)}


def encode_examples(tokenizer: Any, examples: list[Example], max_length: int) -> EncodedSet:
    encoded, problems = [], Problems()
    for example in examples:
        try:
            encoded.append(_encode(tokenizer, example, max_length))
        except DataError as exc:
            problems.add(exc)
    problems.raise_any()
    rows = [_row(enc) for enc in encoded if enc.trained_tokens]
    return EncodedSet(examples, encoded, rows, _statistics(examples, encoded))


def _encode(tokenizer: Any, example: Example, max_length: int) -> Encoded:
    """One example's tokens; a conversation the chat template cannot render is that record's error."""
    if example.is_text:
        return encode_text(tokenizer, example.messages[0]["content"], max_length)
    if example.is_continuation:
        prompt, completion = (m["content"] for m in example.messages)
        return encode_continuation(tokenizer, prompt, completion, max_length)
    _check_renderable(tokenizer, example)
    with _record_errors(example):
        return encode(tokenizer, example.messages, max_length, example.untrained, example.tools, example.mask_reasoning)


def _check_renderable(tokenizer: Any, example: Example) -> None:
    """Tool calls and reasoning need a chat template that renders them."""
    if example.trains_tools and not renders_tools(tokenizer):
        raise DataError(
            example.path,
            example.line,
            "the record has tool calls, and this model's chat template "
            "cannot render tool calls; use a model whose template supports tools, or drop these records",
        )
    if example.has_reasoning and reasoning_key(tokenizer) is None:
        raise DataError(
            example.path,
            example.line,
            "the record has reasoning (reasoning_content), and this model's chat template cannot render it; "
            "set reasoning=drop to train on the answers without it, or use a model whose template renders reasoning",
        )


@contextmanager
def _record_errors(example: Example) -> Iterator[None]:
    """A conversation the chat template cannot render is that record's error."""
    from jinja2 import TemplateError

    try:
        yield
    except LoraopsError as exc:
        raise DataError(example.path, example.line, str(exc)) from None
    except (TemplateError, ValueError, TypeError, KeyError, IndexError) as exc:  # what templates raise
        raise DataError(
            example.path, example.line, f"the model's chat template cannot render this conversation: {exc}"
        ) from None


def encode_preferences(
    tokenizer: Any, examples: list[Example], method: str, max_length: int, max_prompt_length: int | None = None
) -> EncodedSet:
    """Preference examples as TRL's trainers take them: pairs (dpo, orpo) or labelled answers (kto)."""
    encoded, problems = [], Problems()
    for example in examples:
        try:
            encoded.append(_encode_preference(tokenizer, example, max_length, max_prompt_length))
        except DataError as exc:
            problems.add(exc)
    problems.raise_any()
    rows = [row for enc in encoded if enc.trained_tokens for row in _preference_rows(enc, method)]
    stats = _statistics(examples, encoded)
    kept = [enc for enc in encoded if enc.trained_tokens]
    kinds = Counter("pairs" if e.rejected_ids else "desirable" if e.label else "undesirable" for e in kept)
    stats.preference = {kind: kinds[kind] for kind in ("pairs", "desirable", "undesirable") if kinds[kind]}
    return EncodedSet(examples, encoded, rows, stats)


def _encode_preference(tokenizer: Any, example: Example, max_length: int, max_prompt_length: int | None) -> EncodedPair:
    _check_renderable(tokenizer, example)
    with _record_errors(example):
        return encode_preference(tokenizer, example, max_length, max_prompt_length)


def _preference_rows(enc: EncodedPair, method: str) -> list[dict[str, Any]]:
    """TRL's columns: prompt_ids with chosen_ids and rejected_ids, or (kto, pairs unpaired) completion_ids and
    a label."""
    prompt = enc.prompt_ids
    if method != "kto":
        length = len(prompt) + max(len(enc.chosen_ids), len(enc.rejected_ids))  # for group_by_length
        return [
            {"prompt_ids": prompt, "chosen_ids": enc.chosen_ids, "rejected_ids": enc.rejected_ids, "length": length}
        ]
    answers = [(enc.chosen_ids, True), (enc.rejected_ids, False)] if enc.rejected_ids else [(enc.chosen_ids, enc.label)]
    return [{"prompt_ids": prompt, "completion_ids": ids, "label": label} for ids, label in answers]


def _encoder(cfg: TrainConfig) -> Callable[[Any, list[Example]], EncodedSet]:
    """How this run's examples become tokens: conversations with trained spans, or preference pairs."""
    if cfg.method == "sft":
        return lambda tokenizer, examples: encode_examples(tokenizer, examples, cfg.max_length)
    return lambda tokenizer, examples: encode_preferences(
        tokenizer, examples, cfg.method, cfg.max_length, cfg.max_prompt_length
    )


def prepare_data(cfg: TrainConfig, tokenizer: Any, model_path: str) -> PreparedData:
    """Validate and encode the training data; raises DataError before anything heavy starts."""
    limit = context_length(model_path)
    if limit is not None and cfg.max_length > limit:
        raise ConfigError(
            f"max_length={cfg.max_length} is longer than the model's context ({limit} tokens, "
            f"max_position_embeddings of {model_path}); lower max_length"
        )
    training = resolve_training_files(cfg)
    loaded = load_examples(training.files, format_options(cfg))
    selection = select_validation(cfg, loaded.examples, training.files)
    template_added = ensure_chat_template(tokenizer)
    kept = _deduplicated(selection.training) if cfg.dedup else selection.training
    encoder = _encoder(cfg)
    data = encoder(tokenizer, kept)
    stats = data.stats
    stats.duplicates += len(selection.training) - len(kept)  # counted before dedup removed them
    stats.deduplicated, stats.skipped = len(selection.training) - len(kept), dict(loaded.skipped)
    _log_formats(stats, cfg.columns or {})
    log.info(
        "data: %d records from %d files -> %d examples, %d tokens (%d trained), %d truncated at %d, "
        "%d dropped with every label masked, %d duplicates",
        stats.records,
        len(training.files),
        stats.examples,
        stats.tokens,
        stats.trained_tokens,
        stats.truncated,
        cfg.max_length,
        stats.dropped_all_masked,
        stats.duplicates,
    )
    if not stats.examples:
        raise DataError(
            cfg.dataset_path, None, "every example lost all its assistant tokens to truncation; raise max_length"
        )
    validation = _validation(tokenizer, selection.validation, selection.source, encoder)
    rows = _packed(data.rows, cfg.max_length, stats) if cfg.packing else data.rows
    return PreparedData(
        data.examples, data.encoded, rows, stats, training.files, training.source, template_added, validation
    )


def _packed(rows: list[dict[str, Any]], capacity: int, stats: DataStats) -> list[dict[str, Any]]:
    packed = pack_rows(rows, capacity)
    stats.packing = packing_stats(rows, packed, capacity).as_dict()
    log.info(
        "packing: %d examples into %d rows of %d tokens (%.1f%% filled)",
        len(rows),
        len(packed),
        capacity,
        100 * stats.packing["fill"],
    )
    return packed


def _deduplicated(examples: list[Example]) -> list[Example]:
    """The first of each group of records equal but for whitespace."""
    seen: set[str] = set()
    kept = []
    for example in examples:
        key = conversation_key([*example.messages, *example.rejected])  # a pair: both of its answers
        if key not in seen:
            seen.add(key)
            kept.append(example)
    return kept


def _log_formats(stats: DataStats, columns: dict[str, str]) -> None:
    """Say how each file was read, mappings included, so a misread layout shows before training."""
    mapped = f", columns {_mapping(columns)}" if columns else ""
    for path, formats in stats.files.items():
        read_as = ", ".join(
            f"{n} as {fmt}" + (f" ({_mapping(PRESETS[fmt][1])})" if fmt in PRESETS else "")
            for fmt, n in sorted(formats.items())
        )
        log.info("data: %s: %s%s", path, read_as, mapped)
    for reason, n in stats.skipped.items():
        log.info("data: skipped %d records: %s", n, reason)


def _mapping(columns: dict[str, str]) -> str:
    return ", ".join(f"{target}={source}" for target, source in columns.items())


def _validation(
    tokenizer: Any, examples: list[Example], source: dict[str, Any], encoder: Callable[[Any, list[Example]], EncodedSet]
) -> ValidationData | None:
    if not examples:
        return None
    data = encoder(tokenizer, examples)
    where = source.get("path") or f"{len(examples)} records held out (val_fraction={source.get('fraction')})"
    log.info(
        "validation: %d records from %s -> %d examples, %d tokens (%d scored)",
        data.stats.records,
        where,
        data.stats.examples,
        data.stats.tokens,
        data.stats.trained_tokens,
    )
    if not data.rows:
        raise DataError(
            where, None, "every validation example lost all its assistant tokens to truncation; raise max_length"
        )
    return ValidationData(data.examples, data.encoded, data.rows, data.stats, source)
