"""A training file: where it is read from, its name in the dataset, and its fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

# Inside a dataset folder (local or lakeFS), eval/ holds the eval splits and is never training data.
EVAL_DIRNAME = "eval"


@dataclass(frozen=True)
class DataFile:
    path: Path  # where it is read from (for lakeFS: the local cached copy)
    sha256: str
    name: str  # relative to the dataset root: what the dataset hash covers, wherever the data lives


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_sha256(files: list[DataFile]) -> str:
    """One hash for the whole dataset: relative names and contents, in order."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}\0{f.sha256}\n".encode())
    return digest.hexdigest()


def fingerprint(paths: list[Path], root: Path) -> list[DataFile]:
    return [DataFile(p, sha256_file(p), p.relative_to(root).as_posix()) for p in paths]
