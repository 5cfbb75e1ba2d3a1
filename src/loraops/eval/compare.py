"""`loraops compare`: a run against its reference, example by example, with a verdict that knows noise.

Both sides must have been scored on the same thing (their fingerprints agree). Each split and metric
gets the paired delta with a bootstrap interval and a p-value (McNemar's exact test for exact match);
the verdict is IMPROVED only when the primary metric's gain is significant, INCONCLUSIVE when the data
cannot tell, and NOT IMPROVED otherwise or when a guarded split dropped significantly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from loraops.config import METRICS, CompareConfig, GuardConfig
from loraops.errors import LoraopsError
from loraops.eval.fingerprint import DATA_FIELDS, MODEL_FIELDS, differences
from loraops.eval.metrics import bleu_from_stats, bleu_stats
from loraops.eval.records import MetricsRecords
from loraops.eval.stats import PairedDelta, bootstrap_delta, mcnemar_p, mean_of_rows
from loraops.eval.targets import baseline_name
from loraops.reference import published_reference, reference_run_dir
from loraops.runs import RunDir, find_run
from loraops.tracking import Settings
from loraops.tracking.results import record_comparison

IMPROVED, NOT_IMPROVED, INCONCLUSIVE = "IMPROVED", "NOT IMPROVED", "INCONCLUSIVE"
IMPROVED_EXIT, NOT_IMPROVED_EXIT, INCONCLUSIVE_EXIT = 0, 1, 3
EXIT_CODES = {IMPROVED: IMPROVED_EXIT, NOT_IMPROVED: NOT_IMPROVED_EXIT, INCONCLUSIVE: INCONCLUSIVE_EXIT}


class MissingMetricsError(LoraopsError):
    """A side of the comparison was never evaluated on a split it needs."""


@dataclass
class Row:
    split: str
    metric: str
    fine_tuned: float
    reference: float | None
    delta: float | None = None
    low: float | None = None  # the delta's (1 - alpha) interval
    high: float | None = None
    p: float | None = None


@dataclass
class Comparison:
    run: str
    reference: str
    reference_kind: str  # "base" or "published"
    primary_split: str
    primary_metric: str
    verdict: str
    reasons: list[str]
    rows: list[Row]
    missing: dict[str, str]  # split -> command that produces the reference's metrics for it
    flips: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)  # split -> fixed/broken
    overlap: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> training-data overlap
    alpha: float = 0.05

    @property
    def improved(self) -> bool:
        return self.verdict == IMPROVED

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def row(self, split: str, metric: str) -> Row | None:
        return next((r for r in self.rows if r.split == split and r.metric == metric), None)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _reference(cfg: CompareConfig, run: RunDir) -> tuple[str, str, str]:
    """(metrics name, kind, command that produces its metrics)."""
    published = published_reference(cfg, run) if cfg.against != "base" else None
    if cfg.against == "published" and published is None:
        raise LoraopsError(f"against=published, but no run has been published yet ({cfg.reference_file} is missing)")
    if cfg.against == "auto" and published is not None and published["run"] == run.name:
        # The published reference cannot beat itself; it earned its place against the base model.
        published = None
    if published is not None:
        return published["run"], "published", f"loraops eval model={reference_run_dir(published)}"
    return baseline_name(run.base_model()), "base", "make eval-baseline (loraops eval --config-name eval_baseline)"


@dataclass
class _Side:
    name: str
    records: MetricsRecords

    def split(self, split: str, produce: str) -> dict[str, Any]:
        record = self.records.split_record(split)
        if record is None or not isinstance(record.get("metrics"), dict):
            raise MissingMetricsError(
                f"no metrics for {self.name} on split {split!r} "
                f"({self.records.split_path(split)}); produce them with: {produce}"
            )
        if "fingerprint" not in record:
            raise LoraopsError(
                f"the metrics of {self.name} on {split!r} predate fingerprints; evaluate again: {produce}"
            )
        return record


def _eval_command(run: RunDir, settings: dict[str, Any]) -> str:
    keys = ("eval_dir", "limit", "max_new_tokens", "do_sample", "temperature", "top_p", "seed")
    values = " ".join(f"{k}={'null' if settings.get(k) is None else settings[k]}" for k in keys if k in settings)
    return f"loraops eval model={run.path} {values}"


def _check_comparable(split: str, tuned: dict[str, Any], ref: dict[str, Any], kind: str, run: RunDir) -> None:
    fields = DATA_FIELDS + (MODEL_FIELDS if kind == "base" else ())
    diff = differences(tuned["fingerprint"], ref["fingerprint"], fields)
    if diff:
        fix = _eval_command(run, ref.get("settings", {}))
        if not differences(tuned["fingerprint"], ref["fingerprint"], DATA_FIELDS):  # only the model side differs
            fix = "make eval-baseline (the base model changed since it was evaluated)"
        raise LoraopsError(
            f"split {split!r} was not scored the same way on both sides ({'; '.join(diff)}): "
            f"the numbers cannot be compared. Make them comparable with: {fix}"
        )


def _paired(tuned: list[dict[str, Any]], ref: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    by_id: dict[str, list[dict[str, Any]]] = {}
    for row in ref:
        by_id.setdefault(row["id"], []).append(row)
    pairs = [(row, by_id[row["id"]].pop(0)) for row in tuned if by_id.get(row["id"])]
    if len(pairs) != len(tuned) or len(pairs) != len(ref):
        raise LoraopsError("the two sides' predictions do not pair up example by example; evaluate both again")
    return pairs


def _metric_delta(
    metric: str, pairs: list[tuple[dict[str, Any], dict[str, Any]]], tokenize: str, cfg: CompareConfig
) -> PairedDelta:
    if metric == "bleu":
        tuned = np.array(bleu_stats([t["prediction"] for t, _ in pairs], [t["reference"] for t, _ in pairs], tokenize))
        ref = np.array(bleu_stats([r["prediction"] for _, r in pairs], [r["reference"] for _, r in pairs], tokenize))
        statistic = lambda batch: np.array([bleu_from_stats(row) for row in batch.sum(axis=-2)])  # noqa: E731
        return bootstrap_delta(tuned, ref, statistic, cfg.bootstrap_resamples, cfg.seed, cfg.alpha)
    scale = 100.0 if metric == "exact_match" else 1.0  # exact match is reported in %
    tuned = np.array([scale * t["scores"][metric] for t, _ in pairs])
    ref = np.array([scale * r["scores"][metric] for _, r in pairs])
    result = bootstrap_delta(tuned, ref, mean_of_rows, cfg.bootstrap_resamples, cfg.seed, cfg.alpha)
    if metric == "exact_match":
        fixed, broken = int(np.sum(tuned > ref)), int(np.sum(tuned < ref))
        result = PairedDelta(result.delta, result.low, result.high, mcnemar_p(fixed, broken))
    return result


def _flips(pairs: list[tuple[dict[str, Any], dict[str, Any]]], metric: str) -> dict[str, list[dict[str, Any]]]:
    """Examples the fine-tuned model got right that the reference got wrong (fixed), and the reverse."""

    def entry(t: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": t["id"],
            "path": t.get("path"),
            "line": t.get("line"),
            "prompt": t["prompt"],
            "expected": t["reference"],
            "fine_tuned": t["prediction"],
            "reference": r["prediction"],
            "fine_tuned_score": t["scores"][metric],
            "reference_score": r["scores"][metric],
        }

    # Per example, BLEU is the smoothed sentence BLEU that eval recorded.
    return {
        "fixed": [entry(t, r) for t, r in pairs if t["scores"][metric] > r["scores"][metric]],
        "broken": [entry(t, r) for t, r in pairs if t["scores"][metric] < r["scores"][metric]],
    }


def _split_rows(
    split: str,
    tuned: dict[str, Any],
    pairs: list[tuple[dict[str, Any], dict[str, Any]]],
    ref: dict[str, Any],
    cfg: CompareConfig,
) -> list[Row]:
    tokenize = tuned["fingerprint"]["scoring"]["bleu_tokenize"]
    rows = []
    for metric in (m for m in METRICS if m in tuned["metrics"]):
        d = _metric_delta(metric, pairs, tokenize, cfg)
        rows.append(
            Row(
                split,
                metric,
                tuned["metrics"][metric],
                ref["metrics"].get(metric),
                round(d.delta, 6),
                round(d.low, 6),
                round(d.high, 6),
                float(f"{d.p:.4g}"),
            )
        )
    return rows


def _primary_verdict(row: Row, cfg: CompareConfig) -> tuple[str, str]:
    assert row.delta is not None and row.low is not None and row.p is not None
    numbers = f"{row.metric} on {row.split}: {row.delta:+.4g} [{row.low:+.4g}, {row.high:+.4g}], p={row.p:.3g}"
    if row.delta <= cfg.min_delta:
        return NOT_IMPROVED, f"{numbers}: no gain above min_delta={cfg.min_delta:g}"
    if row.p < cfg.alpha and row.low > cfg.min_delta:
        return IMPROVED, f"{numbers}: significant at alpha={cfg.alpha:g}"
    return INCONCLUSIVE, f"{numbers}: a gain, but not significant at alpha={cfg.alpha:g}; more eval data would tell"


def _tripped(guard: GuardConfig, result: Comparison, alpha: float) -> str | None:
    row = result.row(guard.split, guard.metric)
    if row is None or row.delta is None or row.p is None:
        return None
    if row.delta < -guard.max_drop and row.p < alpha:
        return (
            f"guard {guard.split}/{guard.metric}: dropped {row.delta:+.4g} (p={row.p:.3g}), "
            f"more than max_drop={guard.max_drop:g}"
        )
    return None


def compare(cfg: CompareConfig) -> Comparison:
    run, _ = find_run(cfg.run)
    if run is None:
        raise LoraopsError(f"run={cfg.run}: no such run folder; train one first (`make train`)")
    reference, kind, produce = _reference(cfg, run)
    if reference == run.name:
        raise LoraopsError(f"run {run.name} is itself the published reference; compare against=base")
    tuned_side = _Side(run.name, MetricsRecords.of(cfg.metrics_dir or "", run.name))
    ref_side = _Side(reference, MetricsRecords.of(cfg.metrics_dir or "", reference))
    splits = tuned_side.records.splits() or [cfg.primary_split]
    if cfg.primary_split not in splits:
        raise MissingMetricsError(
            f"{run.name} was not evaluated on the primary split {cfg.primary_split!r}; "
            f"produce it with: make eval (loraops eval model={cfg.run})"
        )
    tuned_side.split(cfg.primary_split, f"make eval (loraops eval model={cfg.run})")
    ref_side.split(cfg.primary_split, produce)
    result = Comparison(
        run.name, reference, kind, cfg.primary_split, cfg.primary_metric, INCONCLUSIVE, [], [], {}, alpha=cfg.alpha
    )
    for split in splits:
        _compare_split(split, tuned_side, ref_side, run, kind, produce, cfg, result)
    _decide(result, cfg)
    result.overlap = training_overlap(run, tuned_side.records, splits)
    tuned_side.records.write_comparison(result.as_dict())
    record_comparison(run, result.as_dict(), Settings.of(cfg))
    return result


def _compare_split(
    split: str,
    tuned_side: _Side,
    ref_side: _Side,
    run: RunDir,
    kind: str,
    produce: str,
    cfg: CompareConfig,
    result: Comparison,
) -> None:
    tuned = tuned_side.split(split, f"make eval (loraops eval model={cfg.run})")
    if ref_side.records.split_record(split) is None:
        result.missing[split] = produce
        result.rows += [Row(split, m, tuned["metrics"][m], None) for m in METRICS if m in tuned["metrics"]]
        return
    ref = ref_side.split(split, produce)
    _check_comparable(split, tuned, ref, kind, run)
    pairs = _paired(tuned_side.records.predictions(split), ref_side.records.predictions(split))
    result.rows += _split_rows(split, tuned, pairs, ref, cfg)
    result.flips[split] = _flips(pairs, cfg.primary_metric)


def _decide(result: Comparison, cfg: CompareConfig) -> None:
    primary = result.row(cfg.primary_split, cfg.primary_metric)
    assert primary is not None
    result.verdict, reason = _primary_verdict(primary, cfg)
    result.reasons = [reason]
    tripped = [t for t in (_tripped(g, result, cfg.alpha) for g in cfg.guards) if t]
    if tripped:
        result.verdict = NOT_IMPROVED
        result.reasons += tripped


def training_overlap(run: RunDir, records: MetricsRecords, splits: list[str]) -> dict[str, dict[str, Any]]:
    """Per split: how many of its examples the run's training data also holds (exact or near duplicates)."""
    from loraops.data.overlap import near_duplicates, prompt_text, shared_prompts

    training = _training_conversations(run)
    if training is None:
        return {}
    texts = [prompt_text(c) for c in training]
    overlap = {}
    for split in splits:
        rows = records.predictions(split) if records.split_record(split) else []
        prompts = [row["messages"] for row in rows]
        exact = shared_prompts(prompts, training)
        near = sum(near_duplicates(texts, [" ".join(m["content"] for m in p) for p in prompts]))
        overlap[split] = {"n": len(rows), "exact": exact, "near": near, "share": round(near / max(1, len(rows)), 4)}
    return overlap


def _training_conversations(run: RunDir) -> list[list[dict[str, str]]] | None:
    """The run's training conversations, read from the files its manifest names, if they are still there."""
    from pathlib import Path

    from loraops.data.datafiles import DataFile
    from loraops.data.formats import FormatOptions
    from loraops.data.sources import load_examples

    files = run.read_manifest().get("data", {}).get("files", [])
    paths = [Path(f["path"]) for f in files if isinstance(f, dict) and "path" in f]
    if not paths or not all(p.is_file() for p in paths):
        return None
    try:
        cfg = run.read_config()  # read the files as the run read them: same format and column mapping
        options = FormatOptions(
            cfg.get("data_format", "auto"),
            dict(cfg.get("columns") or {}),
            cfg.get("system_prompt"),
            True,
            cfg.get("preference", "refuse"),
        )
        examples = load_examples([DataFile(p, "", p.name) for p in paths], options).examples
    except LoraopsError:
        return None
    return [e.messages for e in examples]


def format_table(result: Comparison, show_flips: int = 3) -> str:
    header = f"{'split':<13}{'metric':<13}{'fine-tuned':>11}{'reference':>11}  {'delta [95% interval]':<30}{'p':>8}"
    lines = [f"{result.run} vs {result.reference} ({result.reference_kind})", header, "-" * len(header)]
    for r in result.rows:
        ref = "n/a" if r.reference is None else f"{r.reference:.4g}"
        delta = "n/a" if r.delta is None else f"{r.delta:+.4g} [{r.low:+.4g}, {r.high:+.4g}]"
        p = "" if r.p is None else f"{r.p:.3g}"
        lines.append(f"{r.split:<13}{r.metric:<13}{r.fine_tuned:>11.4g}{ref:>11}  {delta:<30}{p:>8}")
    for split, flips in result.flips.items():
        lines.append(
            f"{split}: {len(flips['fixed'])} fixed, {len(flips['broken'])} broken (by {result.primary_metric})"
        )
        for kind in ("fixed", "broken"):
            for flip in flips[kind][:show_flips]:
                lines.append(
                    f"  {kind}: {flip['prompt'][:60]!r}: expected {flip['expected'][:40]!r}, "
                    f"fine-tuned {flip['fine_tuned'][:40]!r}, reference {flip['reference'][:40]!r}"
                )
    for split, o in result.overlap.items():
        if o["near"]:
            lines.append(
                f"leakage: {o['near']} of {o['n']} {split} examples are also in the training data "
                f"({o['exact']} exactly)"
            )
    for split, produce in result.missing.items():
        lines.append(f"note: {result.reference} has no metrics for split {split!r}; produce them with: {produce}")
    lines.append(f"verdict: {result.verdict} against {result.reference}")
    lines += [f"  {reason}" for reason in result.reasons]
    return "\n".join(lines)
