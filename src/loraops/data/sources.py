"""The training files a config names (local folder or lakeFS), fingerprinted, and their records."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loraops.data.datafiles import EVAL_DIRNAME, DataFile, fingerprint
from loraops.data.files import read_jsonl
from loraops.data.formats import Example, to_example
from loraops.errors import DataError

if TYPE_CHECKING:
    from loraops.config import TrainConfig

def lakefs_cache_dir() -> Path:
    """Where lakeFS files are cached: LORAOPS_CACHE_DIR/lakefs, else ~/.cache/loraops/lakefs."""
    base = os.environ.get("LORAOPS_CACHE_DIR") or Path.home() / ".cache" / "loraops"
    return Path(base) / "lakefs"


def find_training_files(dataset_path: str, pattern: str) -> list[DataFile]:
    """Files matching `pattern` under `dataset_path`, sorted, never from its eval/ folder."""
    root = Path(dataset_path)
    if not root.is_dir():
        raise DataError(root, None, "dataset_path is not a folder")
    eval_dir = (root / EVAL_DIRNAME).resolve()
    paths = sorted(
        p for p in root.glob(pattern) if p.is_file() and eval_dir not in p.resolve().parents
    )
    if not paths:
        raise DataError(root, None, f"no training files match dataset_pattern {pattern!r}")
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
        snap = fetch_lakefs(src.repository or "", src.ref, src.path, cfg.dataset_pattern, lakefs_cache_dir())
        files = fingerprint(snap.files, lakefs_cache_dir() / snap.repository / snap.commit_id / snap.prefix)
        return TrainingData(files, {"type": "lakefs", **snap.manifest_entry(), "dataset_pattern": cfg.dataset_pattern})
    files = find_training_files(cfg.dataset_path, cfg.dataset_pattern)
    return TrainingData(files, {"type": "local", "dataset_path": cfg.dataset_path, "dataset_pattern": cfg.dataset_pattern})


def load_examples(files: list[DataFile], data_format: str) -> list[Example]:
    """Read and validate every record; raise on the first bad one, or on an empty dataset."""
    examples = [
        to_example(record, data_format, f.path, line) for f in files for line, record in read_jsonl(f.path)
    ]
    if not examples:
        raise DataError(", ".join(str(f.path) for f in files), None, "the dataset is empty (no records)")
    return examples
