"""The training files a config names (local folder or lakeFS), fingerprinted, and their records."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loraops.data.datafiles import EVAL_DIRNAME, DataFile, fingerprint
from loraops.data.files import DATA_SUFFIXES, is_data_file, read_records
from loraops.data.formats import LABELLED, PAIRS, Example, FormatOptions, Skipped, records_of, to_example
from loraops.errors import DataError, Problems
from loraops.paths import cache_dir

if TYPE_CHECKING:
    from loraops.config import TrainConfig

log = logging.getLogger(__name__)


def find_training_files(dataset_path: str, pattern: str) -> list[DataFile]:
    """Files matching `pattern` under `dataset_path`, sorted, never from its eval/ folder."""
    root = Path(dataset_path)
    if not root.is_dir():
        raise DataError(root, None, "dataset_path is not a folder")
    eval_dir = (root / EVAL_DIRNAME).resolve()
    matched = sorted(p for p in root.glob(pattern) if p.is_file() and eval_dir not in p.resolve().parents)
    paths = [p for p in matched if is_data_file(p)]
    ignored = [p.relative_to(root).as_posix() for p in matched if p not in paths and not p.name.startswith(".")]
    if ignored:
        log.info(
            "not training data (%s only; no dataset registries or already converted exports): %s",
            ", ".join(DATA_SUFFIXES),
            ", ".join(ignored),
        )
    if not paths:
        raise DataError(
            root,
            None,
            f"no training files match dataset_pattern {pattern!r} (data files are {', '.join(DATA_SUFFIXES)})",
        )
    return fingerprint(paths, root)


@dataclass(frozen=True)
class TrainingData:
    files: list[DataFile]
    source: dict[str, object]  # what the manifest records about where the files came from


def resolve_training_files(cfg: "TrainConfig") -> TrainingData:
    """The training files named by the config's data source, fingerprinted."""
    if cfg.data_source.type == "lakefs":
        from loraops.data.lakefs_source import fetch_lakefs  # the SDK import costs ~0.5 s: only when used

        src = cfg.data_source
        snap = fetch_lakefs(src.repository or "", src.ref, src.path, cfg.dataset_pattern, cache_dir("lakefs"))
        files = fingerprint(snap.files, cache_dir("lakefs") / snap.repository / snap.commit_id / snap.prefix)
        return TrainingData(files, {"type": "lakefs", **snap.manifest_entry(), "dataset_pattern": cfg.dataset_pattern})
    if cfg.data_source.type == "hub":
        from loraops.data.hub_source import fetch_hub_dataset  # datasets and the hub client: only when used

        src = cfg.data_source
        hub = fetch_hub_dataset(src.repo_id or "", src.split, src.revision, src.subset)
        return TrainingData(fingerprint(hub.files, hub.root), {"type": "hub", **hub.manifest_entry()})
    files = find_training_files(cfg.dataset_path, cfg.dataset_pattern)
    return TrainingData(
        files, {"type": "local", "dataset_path": cfg.dataset_path, "dataset_pattern": cfg.dataset_pattern}
    )


@dataclass
class Loaded:
    examples: list[Example]
    skipped: Counter[str]  # reason -> records left out on purpose (skip_non_text, preference=chosen)


def load_examples(files: list[DataFile], options: FormatOptions | str = "auto") -> Loaded:
    """Read and validate every record; raise naming every bad one (problems.SHOWN, then a count), or on an
    empty dataset."""
    options = options if isinstance(options, FormatOptions) else FormatOptions(options)
    examples, skipped, problems = [], Counter[str](), Problems()
    for f in files:
        try:
            for line, whole in read_records(f.path, problems):
                examples += _examples(whole, options, f.path, line, skipped, problems)
        except DataError as exc:  # the file cannot be read on from here
            problems.add(exc)
    problems.raise_any()
    if not examples:
        what = f"every record was skipped ({dict(skipped)})" if skipped else "the dataset is empty (no records)"
        raise DataError(", ".join(str(f.path) for f in files), None, what)
    return Loaded(examples, skipped)


def _examples(
    whole: dict[str, Any], options: FormatOptions, path: Path, line: int, skipped: Counter[str], problems: Problems
) -> list[Example]:
    """The examples one record holds (a message tree holds several); what is skipped or wrong is counted."""
    examples = []
    for record in records_of(whole, options.tree_paths):
        try:
            examples.append(to_example(record, options, path, line))
        except Skipped as skip:
            skipped[skip.reason] += 1
        except DataError as exc:
            problems.add(exc)
    return examples


def reread(paths: list[Path], cfg: TrainConfig) -> list[Example] | None:
    """Training files read again as the run `cfg` read them (same format and mapping, non-text skipped);
    None when one is gone or no longer reads."""
    if not paths or not all(p.is_file() for p in paths):
        return None
    options = replace(format_options(cfg), skip_non_text=True)
    try:
        return load_examples([DataFile(p, "", p.name) for p in paths], options).examples
    except DataError:
        return None


def format_options(cfg: TrainConfig) -> FormatOptions:
    return FormatOptions(
        cfg.data_format,
        dict(cfg.columns or {}),
        cfg.system_prompt,
        cfg.skip_non_text,
        {"sft": cfg.preference, "kto": LABELLED}.get(cfg.method, PAIRS),
        cfg.reasoning,
        cfg.tree_paths,
        cfg.prompt_completion,
    )
