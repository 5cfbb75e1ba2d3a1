"""`loraops compare`: a run against its reference, example by example, with a verdict that knows noise.

The command finds the two sides (the run; the published reference or the base model), reads what
`loraops eval` recorded for each, checks that they were scored the same way, lets eval/verdict.py judge,
adds how much of each split the training data also holds, and records the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loraops.config import CompareConfig
from loraops.data.overlap import split_overlap
from loraops.data.sources import reread
from loraops.errors import LoraopsError
from loraops.eval import verdict
from loraops.eval.fingerprint import check_rows
from loraops.eval.records import MetricsRecords
from loraops.eval.scoring import check_split_metrics, rescored
from loraops.eval.targets import baseline_name
from loraops.records import Comparison, Flip, Overlap, Prediction, Row, SplitRecord
from loraops.reference import published_reference, reference_run_dir
from loraops.runs import RunDir, find_run
from loraops.tracking import Settings
from loraops.tracking.results import record_comparison


class MissingMetricsError(LoraopsError):
    """A side of the comparison was never evaluated on a split it needs."""


@dataclass(frozen=True)
class _Side:
    name: str
    records: MetricsRecords
    produce: str  # the command that produces its metrics

    def split(self, split: str) -> SplitRecord:
        record = self.records.split_record(split)
        if record is None:
            raise MissingMetricsError(
                f"no metrics for {self.name} on split {split!r} ({self.records.split_path(split)}); "
                f"produce them with: {self.produce}"
            )
        if not record.fingerprint:
            raise LoraopsError(
                f"the metrics of {self.name} on {split!r} predate fingerprints; evaluate again: {self.produce}"
            )
        return record

    def scored(self, split: str) -> tuple[SplitRecord, list[Prediction]]:
        """The split's record and rows, every score recomputed from the answers (never taken on trust)."""
        record = self.split(split)
        tokenize = str(record.fingerprint.get("scoring", {}).get("bleu_tokenize", "13a"))
        rows = rescored(self.records.predictions(split), tokenize, self.records.predictions_path(split))
        check_rows(record.fingerprint, rows, self.records.predictions_path(split))
        metrics = check_split_metrics(record.metrics, rows, tokenize, self.records.split_path(split))
        return record.model_copy(update={"metrics": metrics}), rows


def _reference(cfg: CompareConfig, run: RunDir) -> tuple[str, str, str]:
    """(metrics name, kind, command that produces its metrics)."""
    published = published_reference(cfg, run) if cfg.against != "base" else None
    if cfg.against == "published" and published is None:
        raise LoraopsError(f"against=published, but no run has been published yet ({cfg.reference_path} is missing)")
    if cfg.against == "auto" and published is not None and published.run == run.name:
        published = None  # the published reference cannot beat itself; it earned its place against the base model
    if published is not None:
        return published.run, "published", f"loraops eval model={reference_run_dir(published)}"
    return baseline_name(run.base_model()), "base", "make eval-baseline (loraops eval --config-name eval_baseline)"


def _eval_fix(run: RunDir, record: SplitRecord) -> str:
    """`loraops eval` of the run with the reference's recorded settings: what makes the two comparable."""
    values = " ".join(f"{k}={_override(v)}" for k, v in record.settings.items())
    return f"loraops eval model={run.path} {values}".rstrip()


def _override(value: object) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def compare(cfg: CompareConfig) -> Comparison:
    run, _ = find_run(cfg.run)
    if run is None:
        raise LoraopsError(f"run={cfg.run}: no such run folder; train one first (`make train`)")
    reference, kind, produce = _reference(cfg, run)
    if reference == run.name:
        raise LoraopsError(f"run {run.name} is itself the published reference; compare against=base")
    tuned = _Side(
        run.name, MetricsRecords.of(cfg.metrics_folder, run.name), f"make eval (loraops eval model={cfg.run})"
    )
    ref = _Side(reference, MetricsRecords.of(cfg.metrics_folder, reference), produce)
    splits = tuned.records.splits() or [cfg.primary_split]
    if cfg.primary_split not in splits:
        raise MissingMetricsError(
            f"{run.name} was not evaluated on the primary split {cfg.primary_split!r}; produce it with: {tuned.produce}"
        )
    tuned.split(cfg.primary_split)  # both sides must have the primary split, whatever else they lack
    ref.split(cfg.primary_split)
    parts = [_compare_split(split, tuned, ref, run, kind, cfg) for split in splits]
    rows = [row for split_rows, _ in parts for row in split_rows]
    flips = {split: found for split, (_, found) in zip(splits, parts) if found is not None}
    missing = {split: produce for split, (_, found) in zip(splits, parts) if found is None}
    overlap = training_overlap(run, tuned.records, splits)
    result = verdict.comparison(run.name, reference, kind, cfg, rows, flips=flips, missing=missing, overlap=overlap)
    tuned.records.write_comparison(result)
    record_comparison(run, result, Settings.of(cfg))
    return result


def _compare_split(
    split: str, tuned: _Side, ref: _Side, run: RunDir, kind: str, cfg: CompareConfig
) -> tuple[list[Row], dict[str, list[Flip]] | None]:
    """The split's rows and its flips; no flips when the reference was never scored on it."""
    tuned_record, tuned_rows = tuned.scored(split)
    if ref.records.split_record(split) is None:
        return verdict.unpaired_rows(split, tuned_record), None
    verdict.check_comparable(split, tuned_record, ref.split(split), kind, _eval_fix(run, ref.split(split)))
    ref_record, ref_rows = ref.scored(split)
    pairs = verdict.paired(tuned_rows, ref_rows)
    judged_by = verdict.flip_metric(tuned_record.metrics, cfg.primary_metric)
    return verdict.split_rows(split, tuned_record, ref_record, pairs, cfg), verdict.flips(pairs, judged_by)


def training_overlap(run: RunDir, records: MetricsRecords, splits: list[str]) -> dict[str, Overlap]:
    """Per split: how many of its examples the run's training data also holds (exact or near duplicates);
    {} when the training files are gone or changed their layout."""
    try:
        config = run.train_config()
    except LoraopsError:
        return {}
    examples = reread([Path(f.path) for f in run.read_manifest().data.files], config)
    if examples is None:
        return {}
    training = [e.messages for e in examples]
    evaluated = {s: records.predictions(s) if records.split_record(s) else [] for s in splits}
    return {split: split_overlap(training, [row.messages for row in rows]) for split, rows in evaluated.items()}


def format_table(result: Comparison, show_flips: int = 3) -> str:
    width = max([13, *(len(r.metric) + 2 for r in result.rows)])
    header = (
        f"{'split':<13}{'metric':<{width}}{'fine-tuned':>11}{'reference':>11}  {'delta [95% interval]':<30}{'p':>8}"
    )
    lines = [f"{result.run} vs {result.reference} ({result.reference_kind})", header, "-" * len(header)]
    for r in result.rows:
        ref = "n/a" if r.reference is None else f"{r.reference:.4g}"
        delta = "n/a" if r.delta is None else f"{r.delta:+.4g} [{r.low:+.4g}, {r.high:+.4g}]"
        p = "" if r.p is None else f"{r.p:.3g}"
        lines.append(f"{r.split:<13}{r.metric:<{width}}{r.fine_tuned:>11.4g}{ref:>11}  {delta:<30}{p:>8}")
    for split, flips in result.flips.items():
        fixed, broken = flips.get("fixed", []), flips.get("broken", [])
        judged_by = verdict.flip_metric({r.metric for r in result.rows if r.split == split}, result.primary_metric)
        lines.append(f"{split}: {len(fixed)} fixed, {len(broken)} broken (by {judged_by})")
        for kind, shown in (("fixed", fixed), ("broken", broken)):
            lines += [
                f"  {kind}: {f.prompt[:60]!r}: expected {f.expected[:40]!r}, fine-tuned {f.fine_tuned[:40]!r}, "
                f"reference {f.reference[:40]!r}"
                for f in shown[:show_flips]
            ]
    for split, o in result.overlap.items():
        if o.near:
            lines.append(
                f"leakage: {o.near} of {o.n} {split} examples are also in the training data ({o.exact} exactly)"
            )
    for split, produce in result.missing.items():
        lines.append(f"note: {result.reference} has no metrics for split {split!r}; produce them with: {produce}")
    lines.append(f"verdict: {result.verdict} against {result.reference}")
    lines += [f"  {reason}" for reason in result.reasons]
    return "\n".join(lines)
