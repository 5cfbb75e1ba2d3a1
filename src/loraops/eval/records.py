"""The metrics folder: what `loraops eval` writes for each evaluated model, and `compare` reads.

    <metrics_dir>/<name>/<split>.json               one split's scores, settings and target
    <metrics_dir>/<name>/<split>.predictions.jsonl  every example: prompt, reference, answer, scores
    <metrics_dir>/<name>/summary.json               every split's scores, and `overall`
    <metrics_dir>/<name>/comparison.json            the last `loraops compare` of this run

<name> is a run name, or baseline/<base model> for an untouched base model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraops.atomic import read_json, write_json, write_text_atomic
from loraops.errors import LoraopsError

OVERALL = "overall"


@dataclass(frozen=True)
class MetricsRecords:
    folder: Path

    @classmethod
    def of(cls, metrics_dir: str | Path, name: str) -> MetricsRecords:
        return cls(Path(metrics_dir) / name)

    def split_path(self, split: str) -> Path:
        return self.folder / f"{split}.json"

    @property
    def summary_path(self) -> Path:
        return self.folder / "summary.json"

    def write_split(self, split: str, record: dict[str, Any], predictions: list[dict[str, Any]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.split_path(split), record)
        lines = "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in predictions)
        write_text_atomic(self.folder / f"{split}.predictions.jsonl", lines)

    def write_summary(self, record: dict[str, Any]) -> None:
        write_json(self.summary_path, record)

    @property
    def comparison_path(self) -> Path:
        return self.folder / "comparison.json"

    def write_comparison(self, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.comparison_path, record)

    def comparison(self) -> dict[str, Any] | None:
        """The last `loraops compare` of this model (Comparison.as_dict), or None if it was never compared."""
        return read_json(self.comparison_path) if self.comparison_path.is_file() else None

    def split_record(self, split: str) -> dict[str, Any] | None:
        """Everything recorded for one split (metrics, settings, fingerprint), or None if not evaluated."""
        path = self.split_path(split)
        return read_json(path) if path.is_file() else None

    def predictions(self, split: str) -> list[dict[str, Any]]:
        """The per-example rows of one split, in evaluation order."""
        path = self.folder / f"{split}.predictions.jsonl"
        try:
            return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, ValueError) as exc:
            raise LoraopsError(f"{path}: cannot read the predictions ({exc}); run the evaluation again") from None

    def split_metrics(self, split: str) -> dict[str, float] | None:
        """The scores of one split, or None if it was not evaluated."""
        path = self.split_path(split)
        return read_json(path).get("metrics") if path.is_file() else None

    def splits(self) -> list[str]:
        """The splits of the last evaluation, in its order; [] before any."""
        if not self.summary_path.is_file():
            return []
        return [s for s in read_json(self.summary_path).get("metrics", {}) if s != OVERALL]
