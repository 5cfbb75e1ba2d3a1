"""The records commands hand each other, as typed models: a run's manifest and metrics, an evaluated split
and its predictions, a comparison, and the reference record.

Each is written by one command and read by others (train → eval, compare, publish, report, tracking), so
its fields are declared here once, and a record that does not fit is refused with the file named rather
than read by key and misread later. Fields added by a newer loraops are kept (`extra="allow"`).
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from loraops.atomic import read_json, write_text_atomic
from loraops.errors import LoraopsError

RUNNING, FINISHED, FAILED, INTERRUPTED = "running", "finished", "failed", "interrupted"
Status = Literal["running", "finished", "failed", "interrupted"]
IMPROVED, NOT_IMPROVED, INCONCLUSIVE = "IMPROVED", "NOT IMPROVED", "INCONCLUSIVE"
Verdict = Literal["IMPROVED", "NOT IMPROVED", "INCONCLUSIVE"]
VERDICT_EXIT_CODES = {IMPROVED: 0, NOT_IMPROVED: 1, INCONCLUSIVE: 3}


def _number(value: Any) -> Any:
    """One check for the int-or-float below, so a wrong value is named by its key alone."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # Real: numpy's numbers too
        raise ValueError(f"must be a number, got {value!r:.40}")
    return value


Scores = dict[str, Annotated[float | int, BeforeValidator(_number)]]  # metric -> value; counts (n) kept whole
# The scores of an answer and of a split (each the mean of the per-example score of the same name; BLEU: corpus BLEU).
METRICS = ("exact_match", "answer_match", "jaccard", "rouge1", "rouge2", "rougeL", "bleu")
# The scores of a preference split's pairs (eval/preference.py): no answer is generated.
PREFERENCE_METRICS = ("preference_accuracy", "logp_margin")
SCORED = (*METRICS, *PREFERENCE_METRICS)  # every metric a split can be judged on
PERCENT_METRICS = ("exact_match", "answer_match", "preference_accuracy")  # 0/1 per example, % per split

RecordT = TypeVar("RecordT", bound="Record")


class Record(BaseModel):
    model_config = ConfigDict(extra="allow")

    @classmethod
    def read(cls: type[RecordT], path: Path) -> RecordT:
        """The record in `path`; a broken file is the user's to restore or delete, never a crash."""
        try:
            return cls.model_validate(read_json(path))
        except ValidationError as exc:
            raise LoraopsError(
                f"{path}: not a valid {cls.__name__.lower()} record ({_first_problem(exc)}); restore or delete it"
            ) from None

    def write(self, path: Path, what: str = "this record") -> None:
        write_text_atomic(Path(path), self.model_dump_json(indent=2) + "\n", what)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types, as the file holds them."""
        data: dict[str, Any] = json.loads(self.model_dump_json())
        return data


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


# --- a run folder ---------------------------------------------------------------------------------


class GitInfo(Record):
    commit: str | None = None
    dirty: bool | None = None


class DataFileEntry(Record):
    name: str
    path: str
    sha256: str


class DataLineage(Record):
    source: dict[str, Any] = Field(default_factory=dict)  # local folder, lakeFS commit or Hub commit
    files: list[DataFileEntry] = Field(default_factory=list)
    dataset_sha256: str | None = None


class Manifest(Record):
    """manifest.json: how a run stands, and where it came from."""

    status: Status | None = None
    model_name: str | None = None  # as the config named it
    resolved_model: str | None = None
    git: GitInfo = Field(default_factory=GitInfo)
    data: DataLineage = Field(default_factory=DataLineage)
    validation: dict[str, Any] | None = None  # where the validation records came from
    init_adapter: dict[str, Any] | None = None  # the adapter the run started from (init_adapter): path, sha256, run
    chat_template: str | None = None
    environment: dict[str, Any] = Field(default_factory=dict)
    libraries: dict[str, str | None] = Field(default_factory=dict)
    error: str | None = None


class LossPoint(Record):
    step: int
    loss: float
    learning_rate: float | None = None


class ValidationSummary(Record):
    """Which adapter the run kept, and the validation curve that chose it."""

    select_metric: str = "loss"
    higher_is_better: bool = False
    best: dict[str, Any] | None = None  # step, epoch, value
    stopped_early: dict[str, Any] | None = None  # step, reason
    curve: list[dict[str, float]] = Field(default_factory=list)
    seconds: float = 0.0
    share_of_runtime: float | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class RunMetrics(Record):
    """metrics.json: what training measured, and the eval scores once `loraops eval` ran."""

    train_loss: float | None = None
    first_logged_loss: float | None = None
    final_logged_loss: float | None = None
    epoch_train_loss: list[float] = Field(default_factory=list)
    loss_history: list[LossPoint] = Field(default_factory=list)
    global_steps: int | None = None  # None: training recorded no step (it never ran)
    epochs_completed: float | None = None
    resumed_from: str | None = None
    runtime_s: float | None = None
    train_tokens: int | None = None
    tokens_per_second: float | None = None
    validation: ValidationSummary | None = None
    data: dict[str, Any] = Field(default_factory=dict)  # the data step's counts (DataStats)
    precision: str | None = None
    device: str | None = None
    processes: int | None = None
    eval: dict[str, Scores] = Field(default_factory=dict)  # split (and "overall") -> scores


# --- the metrics folder ---------------------------------------------------------------------------


class EvalTargetRecord(Record):
    name: str
    base_model: str
    adapter_dir: str | None = None
    run_dir: str | None = None


class SplitRecord(Record):
    """<metrics_dir>/<name>/<split>.json: a split's scores, how they were produced, and what they depend on."""

    split: str
    model: EvalTargetRecord
    metrics: Scores
    fingerprint: dict[str, Any]
    settings: dict[str, Any] = Field(default_factory=dict)  # the eval config keys marked `recorded`


class Prediction(Record):
    """One line of <split>.predictions.jsonl."""

    id: str
    path: str | None = None
    line: int | None = None
    prompt: str
    messages: list[dict[str, Any]]
    reference: str
    rejected: str | None = None  # a preference split's pair: its rejected answer (`reference` is the chosen one)
    prediction: str  # the answer generated; for a pair, the one of its two answers the model finds likelier
    logps: dict[str, float] | None = None  # a pair's answers' log-likelihoods: {chosen, rejected}
    stopped_at_eos: bool = False
    new_tokens: int = 0
    scores: Scores


class EvalSummary(Record):
    model: EvalTargetRecord
    metrics: dict[str, Scores]  # split (and "overall") -> scores


class Row(Record):
    """One split and metric of a comparison: the paired delta, its interval and p-value."""

    split: str
    metric: str
    fine_tuned: float
    reference: float | None
    delta: float | None = None
    low: float | None = None  # the delta's (1 - alpha) interval
    high: float | None = None
    p: float | None = None


class Flip(Record):
    id: str
    path: str | None = None
    line: int | None = None
    prompt: str
    expected: str
    fine_tuned: str
    reference: str
    fine_tuned_score: float
    reference_score: float


class Overlap(Record):
    """How many of a split's examples the training data also holds: their scores measure memory."""

    n: int
    exact: int
    near: int
    share: float


class Comparison(Record):
    """comparison.json: a run against its reference, per split and metric, and the verdict."""

    run: str
    reference: str
    reference_kind: Literal["base", "published"]
    primary_split: str
    primary_metric: str
    verdict: Verdict
    reasons: list[str]
    rows: list[Row]
    missing: dict[str, str] = Field(default_factory=dict)  # split -> command that produces the reference's metrics
    flips: dict[str, dict[str, list[Flip]]] = Field(default_factory=dict)  # split -> fixed / broken
    overlap: dict[str, Overlap] = Field(default_factory=dict)
    alpha: float = 0.05

    @property
    def improved(self) -> bool:
        return self.verdict == IMPROVED

    @property
    def exit_code(self) -> int:
        """compare's exit status: 0 improved, 1 not improved (or a guard tripped), 3 inconclusive."""
        return VERDICT_EXIT_CODES[self.verdict]

    def row(self, split: str, metric: str) -> Row | None:
        return next((r for r in self.rows if r.split == split and r.metric == metric), None)


# --- publishing -----------------------------------------------------------------------------------


class RegistryVersion(Record):
    model: str
    version: str
    alias: str


class ExportRecord(Record):
    """export.json, in the export folder and as exports/<format>.json in the run folder: what was exported,
    and how closely the target engine reproduced the evaluated answers."""

    run: str
    format: Literal["gguf", "vllm"]
    files: dict[str, str]  # role (lora, base, merged, quantized, modelfile, adapter) -> file name in the folder
    sha256: dict[str, str]  # file name -> digest
    engine: dict[str, str | None]  # the engine and version that ran the proof, or why none did
    splits: list[str] = Field(default_factory=list)  # the eval splits whose prompts the proof answered
    agreement: list[dict[str, Any]] = Field(default_factory=list)
    min_agreement: float | None = None
    good: bool
    forced: bool = False
    commands: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class Reference(Record):
    """reference.json: the published run that `compare` measures new runs against."""

    run: str
    run_dir: str | None = None  # where its folder was when it was published
    published_at: str | None = None
    destination: str | None = None  # "local:<path>" or "hf:<repo>"
    registry: RegistryVersion | None = None  # the MLflow model version, when publish reached a registry
