"""`loraops check`: what the model would be trained on, without training.

The report is built from the statistics of the same data step that `train` runs (`prepare_data`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraops.config import TrainConfig
from loraops.data.datafiles import EVAL_DIRNAME
from loraops.data.files import is_data_file
from loraops.data.formats import Example
from loraops.data.overlap import split_overlap
from loraops.data.pairs import EncodedPair
from loraops.data.prepare import DataStats, prepare_data
from loraops.data.sources import format_options
from loraops.data.tokenize import IGNORE_INDEX, Encoded, template_written
from loraops.errors import ConfigError
from loraops.estimate import Estimate, Layout, for_training, format_estimate
from loraops.eval.data import find_splits, load_split
from loraops.launch import plan
from loraops.loading import load_tokenizer
from loraops.models import resolve_model_path
from loraops.records import Overlap

TRAIN_OPEN, TRAIN_CLOSE = "[[", "]]"
ADDED_OPEN, ADDED_CLOSE = "«", "»"  # around text the chat template wrote, which is not in the data


@dataclass
class CheckReport:
    stats: DataStats
    eval_overlap: dict[str, Overlap]  # eval split -> its examples also in training, exactly or nearly
    max_length: int
    example: str  # one example rendered with its trained spans marked
    example_source: str
    validation: DataStats | None = None
    validation_source: str = ""
    estimate: Estimate | None = None  # predicted peak memory and time per epoch on this machine


def render_marked(tokenizer: Any, enc: Encoded) -> str:
    """The token sequence as text, trained spans wrapped in [[ ]]; everything else is masked."""
    pieces, run, trained = list[str](), list[int](), False
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
    """Run training's data step on the config and describe what it produced."""
    launch = plan(cfg)  # what cannot run on this machine is refused as training would refuse it
    model_path = resolve_model_path(cfg.model_name)
    tokenizer = load_tokenizer(model_path)
    data = prepare_data(cfg, tokenizer, model_path)
    if not 0 <= example_index < len(data.examples):
        raise ConfigError(f"--example {example_index}: the data has examples 0 to {len(data.examples) - 1}")
    shown = data.examples[example_index]
    return CheckReport(
        stats=data.stats,
        eval_overlap=_eval_overlap(cfg, data.examples),
        max_length=cfg.max_length,
        example=_shown(tokenizer, shown, data.encoded[example_index]),
        example_source=f"{shown.path}:{shown.line} ({shown.format})",
        validation=data.validation.stats if data.validation else None,
        validation_source=_validation_source(data.validation.source) if data.validation else "",
        estimate=for_training(cfg, model_path, data.rows, Layout(launch.processes, launch.sharding)),
    )


def _shown(tokenizer: Any, example: Example, enc: Encoded | EncodedPair) -> str:
    """One example as the model sees it; a preference example's prompt once, then each of its answers."""
    if isinstance(enc, Encoded):
        return _mark_added(render_marked(tokenizer, enc), tokenizer, example)
    lines = ["prompt:", _mark_added(tokenizer.decode(enc.prompt_ids), tokenizer, example)]
    for name, answer in enc.answers():
        shown = _wrap(tokenizer.decode(answer), True) if answer else "(cut to nothing by max_length: not trained)"
        lines += [f"{name} answer:", shown]
    return "\n".join(lines)


def _mark_added(marked: str, tokenizer: Any, example: Example) -> str:
    """The rendered example with the text its chat template wrote (not the data) between « »."""
    if example.is_text or example.is_continuation:
        return marked
    for text in template_written(tokenizer, example.messages):
        marked = marked.replace(text, f"{ADDED_OPEN}{text}{ADDED_CLOSE}", 1)
    return marked


def _validation_source(source: dict[str, Any]) -> str:
    if source.get("type") == "held_out":
        return f"held out from the training files (val_fraction={source['fraction']})"
    return str(source.get("path"))


def _eval_overlap(cfg: TrainConfig, examples: list[Example]) -> dict[str, Overlap]:
    """Per split of <dataset_path>/eval: its examples whose prompt training also asks, exactly or nearly."""
    eval_dir = Path(cfg.dataset_path) / EVAL_DIRNAME
    if cfg.data_source.type != "local" or not eval_dir.is_dir() or not any(map(is_data_file, eval_dir.iterdir())):
        return {}
    training = [e.messages for e in examples]
    options = format_options(cfg)  # eval files are read with the training data's mapping
    splits = find_splits(str(eval_dir), "*")
    return {
        name: split_overlap(training, [e.prompt for e in load_split(path, options)]) for name, path in splits.items()
    }


def _validation_line(r: CheckReport) -> str:
    v = r.validation
    if v is None:
        return "validation: none (the last checkpoint is kept; set val_path or val_fraction to keep the best)"
    return (
        f"validation: {v.records} records from {r.validation_source}; {v.examples} examples, "
        f"{v.tokens} tokens ({v.trained_tokens} scored), {v.truncated} truncated"
    )


def _dropped_lines(s: DataStats, max_length: int) -> list[str]:
    """The records with nothing left to train, which and why, and what to do."""
    lines = [f"all labels masked (dropped): {s.dropped_all_masked}"]
    lines += [f"  {where}" for where in s.dropped_where]
    if s.dropped_all_masked > len(s.dropped_where):
        lines.append(f"  ... and {s.dropped_all_masked - len(s.dropped_where)} more")
    if any("past max_length" in where for where in s.dropped_where):
        lines.append(f"  raise max_length (now {max_length}) to train on these, or shorten their prompts")
    return lines


def _preference_line(counts: dict[str, int]) -> str:
    return "preference examples: " + ", ".join(f"{n} {kind}" for kind, n in counts.items())


def format_report(r: CheckReport, verbose: bool = False) -> str:
    s = r.stats
    lines = ["records per file and format:"]
    for path, formats in s.files.items():
        detail = ", ".join(f"{n} {fmt}" for fmt, n in sorted(formats.items()))
        lines.append(f"  {Path(path)}: {sum(formats.values())} ({detail})")
    length = s.lengths
    lines += [
        f"records: {s.records}; examples that train: {s.examples}",
        *([_preference_line(s.preference)] if s.preference else []),
        f"tokens per example: min {length['min']:g}, median {length['median']:g}, p95 {length['p95']:g}, "
        f"max {length['max']:g}",
        f"truncated at max_length={r.max_length}: {s.truncated}",
        *_dropped_lines(s, r.max_length),
        *(
            [f"answers cut by max_length={r.max_length}: {s.cut_answers} (trained without their end; raise max_length)"]
            if s.cut_answers
            else []
        ),
        *(f"{note}: {n}" for note, n in s.notes.items()),
        *(
            [
                "turn keys loraops does not read (left out of training): "
                + ", ".join(f"`{key}` ({n} records)" for key, n in sorted(s.unread_keys.items()))
            ]
            if s.unread_keys
            else []
        ),
        f"duplicate records (whitespace aside): {s.duplicates}"
        + (f", {s.deduplicated} dropped by dedup" if s.deduplicated else ""),
        *(f"skipped on purpose: {n} ({reason})" for reason, n in s.skipped.items()),
        *(
            f"eval split {split!r}: {o.exact} of {o.n} prompts are training prompts, {o.near} near duplicates"
            for split, o in r.eval_overlap.items()
        ),
        f"trained (assistant) tokens: {s.trained_tokens} of {s.tokens} ({s.trained_tokens / max(1, s.tokens):.1%})",
        *(
            [
                f"packing: {s.packing['examples']} examples into {s.packing['rows']} rows of {s.packing['capacity']} "
                f"tokens ({100 * s.packing['fill']:.1f}% filled)"
            ]
            if s.packing
            else []
        ),
        _validation_line(r),
        "",
        f"example {r.example_source}, as the model sees it ({TRAIN_OPEN} {TRAIN_CLOSE} = trained, the rest is masked; "
        f"{ADDED_OPEN} {ADDED_CLOSE} = written by the chat template, not in your data):",
        r.example,
        *(["", *format_estimate(r.estimate, verbose)] if r.estimate else []),
    ]
    return "\n".join(lines)
