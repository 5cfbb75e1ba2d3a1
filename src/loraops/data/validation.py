"""The validation split: a file, or a stable share of the training records; it never trains.

A held-out record is chosen by a hash of its content, not by its position or a random draw, so the
same records are held out on every run, after a resume, and whatever order the files are listed in.
Identical records hash alike and land on the same side, so a duplicate cannot leak across.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loraops.data.datafiles import EVAL_DIRNAME, DataFile, fingerprint
from loraops.data.formats import Example
from loraops.data.overlap import conversation_key
from loraops.data.sources import format_options, load_examples
from loraops.errors import ConfigError, DataError

if TYPE_CHECKING:
    from loraops.config import TrainConfig

AUTO = "auto"
DEV_SPLIT = "dev.jsonl"


def held_out(example: Example, fraction: float) -> bool:
    """Whether the record belongs to the validation share: its content hash, read as a number in [0, 1).

    The content is the key duplicates are counted by, so records equal but for whitespace stay together.
    """
    content = conversation_key(example.messages).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.sha256(content).digest()[:8], "big") / 2**64 < fraction


def validation_file(cfg: TrainConfig) -> Path | None:
    """The file val_path names; `auto`: the data folder's dev split when it has one (local data only)."""
    if cfg.val_path is None or cfg.eval_strategy == "no":
        return None
    if cfg.val_path == AUTO:
        dev = Path(cfg.dataset_path) / EVAL_DIRNAME / DEV_SPLIT
        return dev if cfg.data_source.type == "local" and dev.is_file() else None
    path = Path(cfg.val_path)
    if not path.is_file():
        raise DataError(path, None, "val_path: no such file")
    return path


@dataclass(frozen=True)
class Selection:
    training: list[Example]
    validation: list[Example]
    source: dict[str, Any]  # for the manifest: where the validation records came from


def select_validation(cfg: TrainConfig, examples: list[Example], files: list[DataFile]) -> Selection:
    """Split the training records from the validation ones, as the config asks."""
    if cfg.eval_strategy != "no" and cfg.val_fraction > 0:
        return _hold_out(examples, cfg.val_fraction, files)
    path = validation_file(cfg)
    if path is None:
        _require_none(cfg)
        return Selection(examples, [], {})
    (val_file,) = fingerprint([path], path.parent)
    source = {"type": "file", "path": str(path), "sha256": val_file.sha256}
    return Selection(examples, load_examples([val_file], format_options(cfg)).examples, source)


def _hold_out(examples: list[Example], fraction: float, files: list[DataFile]) -> Selection:
    names = {str(f.path): f.name for f in files}
    kept, held = list[Example](), list[Example]()
    for example in examples:
        (held if held_out(example, fraction) else kept).append(example)
    if not held or not kept:
        side = "no record" if not held else "every record"
        raise ConfigError(
            f"val_fraction={fraction} held out {side} of {len(examples)}; change val_fraction or set val_path"
        )
    records = [{"file": names.get(e.path, e.path), "line": e.line} for e in held]
    return Selection(kept, held, {"type": "held_out", "fraction": fraction, "records": records})


def _require_none(cfg: TrainConfig) -> None:
    """Selection by a metric and early stopping need validation data; say so rather than ignore them."""
    wanted = [
        f"{key}={value}"
        for key, value, default in (
            ("select_metric", cfg.select_metric, "loss"),
            ("early_stopping_patience", cfg.early_stopping_patience, None),
        )
        if value != default
    ]
    if wanted and cfg.eval_strategy != "no":
        where = (
            f"{Path(cfg.dataset_path) / EVAL_DIRNAME / DEV_SPLIT} does not exist"
            if cfg.val_path == AUTO
            else "val_path is null"
        )
        raise ConfigError(
            f"{', '.join(wanted)} needs validation data, and there is none ({where}); set val_path or val_fraction"
        )
