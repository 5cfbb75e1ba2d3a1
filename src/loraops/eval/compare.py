"""`loraops compare`: a run's eval metrics against the reference, and a verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from loraops.config import METRICS, CompareConfig
from loraops.errors import LoraopsError
from loraops.eval.records import MetricsRecords
from loraops.eval.targets import baseline_name
from loraops.reference import read_reference, reference_run_dir
from loraops.runs import RunDir, find_run

IMPROVED_EXIT, NOT_IMPROVED_EXIT = 0, 1


@dataclass
class Row:
    split: str
    metric: str
    fine_tuned: float
    reference: float | None

    @property
    def delta(self) -> float | None:
        return None if self.reference is None else round(self.fine_tuned - self.reference, 6)


@dataclass
class Comparison:
    run: str
    reference: str
    reference_kind: str  # "base" or "published"
    primary_split: str
    primary_metric: str
    improved: bool
    rows: list[Row]
    missing: dict[str, str]  # split -> command that produces the reference's metrics for it

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows"] = [{**asdict(r), "delta": r.delta} for r in self.rows]
        return data


def _reference(cfg: CompareConfig, run: RunDir) -> tuple[str, str, str]:
    """(metrics name, kind, command that produces its metrics)."""
    published = read_reference(cfg.reference_file or "") if cfg.against != "base" else None
    if cfg.against == "published" and published is None:
        raise LoraopsError(f"against=published, but no run has been published yet ({cfg.reference_file} is missing)")
    if cfg.against == "auto" and published is not None and published["run"] == run.name:
        # The published reference cannot beat itself; it earned its place against the base model.
        published = None
    if published is not None:
        return published["run"], "published", f"loraops eval model={reference_run_dir(published)}"
    return baseline_name(run.base_model()), "base", "make eval-baseline (loraops eval --config-name eval_baseline)"


def _missing(name: str, records: MetricsRecords, split: str, produce: str) -> LoraopsError:
    return LoraopsError(f"no metrics for {name} on split {split!r} ({records.split_path(split)}); "
                        f"produce them with: {produce}")  # fmt: skip


def compare(cfg: CompareConfig) -> Comparison:
    run, _ = find_run(cfg.run)
    if run is None:
        raise LoraopsError(f"run={cfg.run}: no such run folder; train one first (`make train`)")
    reference, kind, produce = _reference(cfg, run)
    if reference == run.name:
        raise LoraopsError(f"run {run.name} is itself the published reference; compare against=base")
    tuned_records = MetricsRecords.of(cfg.metrics_dir or "", run.name)
    ref_records = MetricsRecords.of(cfg.metrics_dir or "", reference)
    splits = tuned_records.splits() or [cfg.primary_split]
    if cfg.primary_split not in splits or tuned_records.split_metrics(cfg.primary_split) is None:
        raise _missing(run.name, tuned_records, cfg.primary_split, f"make eval (loraops eval model={cfg.run})")
    if ref_records.split_metrics(cfg.primary_split) is None:
        raise _missing(reference, ref_records, cfg.primary_split, produce)
    rows: list[Row] = []
    missing: dict[str, str] = {}
    for split in splits:
        tuned = tuned_records.split_metrics(split) or {}
        ref = ref_records.split_metrics(split)
        if ref is None:
            missing[split] = produce
        rows += [Row(split, m, tuned[m], (ref or {}).get(m)) for m in METRICS if m in tuned]
    primary = next(r for r in rows if r.split == cfg.primary_split and r.metric == cfg.primary_metric)
    improved = primary.delta is not None and primary.delta > cfg.min_delta
    result = Comparison(run.name, reference, kind, cfg.primary_split, cfg.primary_metric, improved, rows, missing)
    tuned_records.write_comparison(result.as_dict())
    return result


def format_table(result: Comparison) -> str:
    header = f"{'split':<14}{'metric':<22}{'fine-tuned':>12}{'reference':>12}{'delta':>10}"
    lines = [f"{result.run} vs {result.reference} ({result.reference_kind})", header, "-" * len(header)]
    for r in result.rows:
        ref = "n/a" if r.reference is None else f"{r.reference:.4g}"
        delta = "n/a" if r.delta is None else f"{r.delta:+.4g}"
        lines.append(f"{r.split:<14}{r.metric:<22}{r.fine_tuned:>12.4g}{ref:>12}{delta:>10}")
    for split, produce in result.missing.items():
        lines.append(f"note: {result.reference} has no metrics for split {split!r}; produce them with: {produce}")
    verdict = "IMPROVED" if result.improved else "NOT IMPROVED"
    lines.append(f"verdict: {verdict} on {result.primary_metric} ({result.primary_split}) against {result.reference}")
    return "\n".join(lines)
