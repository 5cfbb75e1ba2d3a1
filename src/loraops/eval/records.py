"""The metrics folder: what `loraops eval` writes for each evaluated model, and `compare` reads.

    <metrics_dir>/<name>/<split>.json               one split's scores, settings and target
    <metrics_dir>/<name>/<split>.predictions.jsonl  every example: prompt, reference, answer, scores
    <metrics_dir>/<name>/summary.json               every split's scores, and `overall`
    <metrics_dir>/<name>/comparison.json            the last `loraops compare` of this run

<name> is a run name, or baseline/<base model> for an untouched base model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from loraops.atomic import write_text_atomic, writing
from loraops.errors import LoraopsError
from loraops.records import Comparison, EvalSummary, Prediction, Scores, SplitRecord

OVERALL = "overall"


@dataclass(frozen=True)
class MetricsRecords:
    folder: Path

    @classmethod
    def of(cls, metrics_dir: str | Path, name: str) -> MetricsRecords:
        return cls(Path(metrics_dir) / name)

    def split_path(self, split: str) -> Path:
        return self.folder / f"{split}.json"

    def predictions_path(self, split: str) -> Path:
        return self.folder / f"{split}.predictions.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.folder / "summary.json"

    @property
    def comparison_path(self) -> Path:
        return self.folder / "comparison.json"

    def files(self) -> list[Path]:
        """The evaluation's records (splits, predictions, summary), not the comparison: what trackers keep."""
        found = sorted(p for p in self.folder.glob("*.json*") if p.is_file()) if self.folder.is_dir() else []
        return [p for p in found if p != self.comparison_path]

    def write_split(self, record: SplitRecord, predictions: list[Prediction]) -> None:
        """Predictions first: the split's record, written last, says what the predictions are. A write that
        fails between the two leaves records `compare` refuses (their scores disagree), never a wrong verdict."""
        with writing(self.folder, "the evaluation's folder"):
            self.folder.mkdir(parents=True, exist_ok=True)
        lines = "".join(row.model_dump_json() + "\n" for row in predictions)
        write_text_atomic(self.predictions_path(record.split), lines, f"the {record.split} split's predictions")
        record.write(self.split_path(record.split), f"the {record.split} split's scores")

    def write_summary(self, summary: EvalSummary) -> None:
        summary.write(self.summary_path, "the evaluation's summary")

    def write_comparison(self, comparison: Comparison) -> None:
        with writing(self.folder, "the comparison's folder"):
            self.folder.mkdir(parents=True, exist_ok=True)
        comparison.write(self.comparison_path, "the comparison")

    def comparison(self) -> Comparison | None:
        """The last `loraops compare` of this model, or None if it was never compared."""
        return Comparison.read(self.comparison_path) if self.comparison_path.is_file() else None

    def split_record(self, split: str) -> SplitRecord | None:
        """Everything recorded for one split (metrics, settings, fingerprint), or None if not evaluated."""
        path = self.split_path(split)
        return SplitRecord.read(path) if path.is_file() else None

    def predictions(self, split: str) -> list[Prediction]:
        """The per-example rows of one split, in evaluation order; a broken row is named by its line."""
        path = self.predictions_path(split)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise LoraopsError(f"{path}: cannot read the predictions ({exc}); run the evaluation again") from None
        return [_prediction(path, number, line) for number, line in enumerate(lines, start=1) if line.strip()]

    def split_metrics(self, split: str) -> Scores | None:
        """The scores of one split, or None if it was not evaluated."""
        record = self.split_record(split)
        return record.metrics if record else None

    def splits(self) -> list[str]:
        """The splits of the last evaluation, in its order; [] before any."""
        if not self.summary_path.is_file():
            return []
        return [s for s in EvalSummary.read(self.summary_path).metrics if s != OVERALL]


def _prediction(path: Path, number: int, line: str) -> Prediction:
    try:
        return Prediction.model_validate_json(line)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        problem = f"`{field}`: {error['msg']}" if field else error["msg"]
        raise LoraopsError(f"{path}:{number}: not a prediction row ({problem}); run the evaluation again") from None
