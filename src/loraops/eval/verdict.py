"""The verdict on two models scored on the same examples: paired deltas, intervals, flips and guards.

Pure: it takes the two sides' split records and prediction rows and the comparison settings, and returns
rows and a verdict; finding the sides, reading and writing records and tracking is `loraops compare`'s job.
Each split and metric gets the paired delta with a bootstrap interval and a p-value (McNemar's exact test
for exact match); the verdict is IMPROVED only when the primary metric's gain is significant, INCONCLUSIVE
when the data cannot tell, and NOT IMPROVED otherwise or when a guarded split dropped significantly.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from loraops.config import CompareConfig, GuardConfig
from loraops.errors import LoraopsError
from loraops.eval.fingerprint import DATA_FIELDS, MODEL_FIELDS, differences
from loraops.eval.metrics import bleu_from_stats, bleu_stats
from loraops.eval.stats import PairedDelta, bootstrap_delta, mcnemar_p, mean_of_rows
from loraops.records import (
    IMPROVED,
    INCONCLUSIVE,
    NOT_IMPROVED,
    PERCENT_METRICS,
    SCORED,
    Comparison,
    Flip,
    Prediction,
    Row,
    SplitRecord,
)

Pair = tuple[Prediction, Prediction]  # the fine-tuned model's row and the reference's, for one example


class NotComparable(LoraopsError):
    """The two sides were not scored the same way; `fix` says what to run so that they are."""

    def __init__(self, split: str, differences: list[str], fix: str) -> None:
        super().__init__(
            f"split {split!r} was not scored the same way on both sides ({'; '.join(differences)}): "
            f"the numbers cannot be compared. Make them comparable with: {fix}"
        )


def check_comparable(split: str, tuned: SplitRecord, ref: SplitRecord, kind: str, eval_fix: str) -> None:
    """Both sides scored the same examples the same way (and, against the base model, tokenized alike)."""
    fields = DATA_FIELDS + (MODEL_FIELDS if kind == "base" else ())
    diff = differences(tuned.fingerprint, ref.fingerprint, fields)
    if not diff:
        return
    if not differences(tuned.fingerprint, ref.fingerprint, DATA_FIELDS):  # only the model side differs
        eval_fix = "make eval-baseline (the base model changed since it was evaluated)"
    raise NotComparable(split, diff, eval_fix)


def paired(tuned: list[Prediction], ref: list[Prediction]) -> list[Pair]:
    """The rows of the two sides matched example by example (by the example's id, in evaluation order)."""
    by_id: dict[str, list[Prediction]] = {}
    for row in ref:
        by_id.setdefault(row.id, []).append(row)
    pairs = [(row, by_id[row.id].pop(0)) for row in tuned if by_id.get(row.id)]
    if len(pairs) != len(tuned) or len(pairs) != len(ref):
        raise LoraopsError("the two sides' predictions do not pair up example by example; evaluate both again")
    return pairs


def _metric_delta(metric: str, pairs: list[Pair], tokenize: str, cfg: CompareConfig) -> PairedDelta:
    if metric == "bleu":  # corpus BLEU, resampled as a corpus through its per-example statistics
        tuned = np.array(bleu_stats([t.prediction for t, _ in pairs], [t.reference for t, _ in pairs], tokenize))
        ref = np.array(bleu_stats([r.prediction for _, r in pairs], [r.reference for _, r in pairs], tokenize))
        return bootstrap_delta(tuned, ref, _corpus_bleu, cfg.bootstrap_resamples, cfg.seed, cfg.alpha)
    scale = 100.0 if metric in PERCENT_METRICS else 1.0  # 0/1 per example, reported in %
    tuned = np.array([scale * t.scores[metric] for t, _ in pairs])
    ref = np.array([scale * r.scores[metric] for _, r in pairs])
    result = bootstrap_delta(tuned, ref, mean_of_rows, cfg.bootstrap_resamples, cfg.seed, cfg.alpha)
    if metric in PERCENT_METRICS:  # right or wrong per example: McNemar's exact test on the discordant pairs
        fixed, broken = int(np.sum(tuned > ref)), int(np.sum(tuned < ref))
        result = PairedDelta(result.delta, result.low, result.high, mcnemar_p(fixed, broken))
    return result


def _corpus_bleu(batch: np.ndarray) -> np.ndarray:
    return np.array([bleu_from_stats(row) for row in batch.sum(axis=-2)])


def flip_metric(scored: Collection[str], primary: str) -> str:
    """The metric a split's flips are judged by, from the metrics it was `scored` on: the primary one, or
    the split's own where it lacks it (a preference split under a generation metric, or the other way round)."""
    if primary in scored:
        return primary
    return "preference_accuracy" if "preference_accuracy" in scored else "exact_match"


def flips(pairs: list[Pair], metric: str) -> dict[str, list[Flip]]:
    """Examples the fine-tuned model got right that the reference got wrong (fixed), and the reverse.

    Per example, BLEU is the smoothed sentence BLEU that eval recorded."""

    def flip(t: Prediction, r: Prediction) -> Flip:
        return Flip(
            id=t.id,
            path=t.path,
            line=t.line,
            prompt=t.prompt,
            expected=t.reference,
            fine_tuned=t.prediction,
            reference=r.prediction,
            fine_tuned_score=t.scores[metric],
            reference_score=r.scores[metric],
        )

    better: Callable[[Pair], bool] = lambda p: p[0].scores[metric] > p[1].scores[metric]  # noqa: E731
    worse: Callable[[Pair], bool] = lambda p: p[0].scores[metric] < p[1].scores[metric]  # noqa: E731
    return {"fixed": [flip(*p) for p in pairs if better(p)], "broken": [flip(*p) for p in pairs if worse(p)]}


def split_rows(split: str, tuned: SplitRecord, ref: SplitRecord, pairs: list[Pair], cfg: CompareConfig) -> list[Row]:
    """One row per metric the split was scored on: both sides' scores and the paired delta."""
    tokenize = str(tuned.fingerprint["scoring"].get("bleu_tokenize", "13a"))
    rows = []
    for metric in (m for m in SCORED if m in tuned.metrics):
        d = _metric_delta(metric, pairs, tokenize, cfg)
        rows.append(
            Row(
                split=split,
                metric=metric,
                fine_tuned=tuned.metrics[metric],
                reference=ref.metrics.get(metric),
                delta=round(d.delta, 6),
                low=round(d.low, 6),
                high=round(d.high, 6),
                p=float(f"{d.p:.4g}"),
            )
        )
    return rows


def unpaired_rows(split: str, tuned: SplitRecord) -> list[Row]:
    """The rows of a split the reference was never scored on: the fine-tuned scores alone."""
    return [
        Row(split=split, metric=m, fine_tuned=tuned.metrics[m], reference=None) for m in SCORED if m in tuned.metrics
    ]


def _primary_verdict(row: Row, cfg: CompareConfig) -> tuple[str, str]:
    assert row.delta is not None and row.low is not None and row.p is not None
    numbers = f"{row.metric} on {row.split}: {row.delta:+.4g} [{row.low:+.4g}, {row.high:+.4g}], p={row.p:.3g}"
    if row.delta <= cfg.min_delta:
        return NOT_IMPROVED, f"{numbers}: no gain above min_delta={cfg.min_delta:g}"
    if row.p < cfg.alpha and row.low > cfg.min_delta:
        return IMPROVED, f"{numbers}: significant at alpha={cfg.alpha:g}"
    return INCONCLUSIVE, f"{numbers}: a gain, but not significant at alpha={cfg.alpha:g}; more eval data would tell"


def _tripped(guard: GuardConfig, rows: list[Row], alpha: float) -> str | None:
    row = next((r for r in rows if r.split == guard.split and r.metric == guard.metric), None)
    if row is None or row.delta is None or row.p is None:
        return None
    if row.delta < -guard.max_drop and row.p < alpha:
        return (
            f"guard {guard.split}/{guard.metric}: dropped {row.delta:+.4g} (p={row.p:.3g}), "
            f"more than max_drop={guard.max_drop:g}"
        )
    return None


def decide(rows: list[Row], cfg: CompareConfig) -> tuple[str, list[str]]:
    """The verdict on the primary split and metric, overruled by any guard that tripped; and the reasons."""
    primary = next(r for r in rows if r.split == cfg.primary_split and r.metric == cfg.primary_metric)
    verdict, reason = _primary_verdict(primary, cfg)
    tripped = [t for t in (_tripped(g, rows, cfg.alpha) for g in cfg.guards) if t]
    return (NOT_IMPROVED, [reason, *tripped]) if tripped else (verdict, [reason])


def comparison(run: str, reference: str, kind: str, cfg: CompareConfig, rows: list[Row], **details: Any) -> Comparison:
    """The comparison record, with its verdict decided from `rows`."""
    verdict, reasons = decide(rows, cfg)
    return Comparison(
        run=run,
        reference=reference,
        reference_kind=kind,
        primary_split=cfg.primary_split,
        primary_metric=cfg.primary_metric,
        verdict=verdict,
        reasons=reasons,
        rows=rows,
        alpha=cfg.alpha,
        **details,
    )
