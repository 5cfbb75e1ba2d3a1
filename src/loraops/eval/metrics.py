"""Scores for generated answers. ROUGE and BLEU come from rouge-score and sacrebleu.

The names (config.METRICS) are the same per example and per split. Scales follow each metric's
convention: exact_match is a percentage, Jaccard overlap and ROUGE F-measures are in [0, 1], BLEU
is sacrebleu's 0-100.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from loraops.config import METRICS

_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def normalize(text: str) -> str:
    """Collapse runs of whitespace and trim: formatting is not what exact match judges."""
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def jaccard(prediction: str, reference: str) -> float:
    """|A ∩ B| / |A ∪ B| over whitespace-token sets; two empty texts agree fully."""
    a, b = set(prediction.split()), set(reference.split())
    return 1.0 if not a and not b else len(a & b) / len(a | b)


@lru_cache(maxsize=1)
def _rouge() -> Any:
    import logging

    from rouge_score import rouge_scorer

    logging.getLogger("absl").setLevel(logging.WARNING)  # rouge-score announces its tokenizer on every start
    return rouge_scorer.RougeScorer(list(_ROUGE_TYPES), use_stemmer=True)


def rouge(prediction: str, reference: str) -> dict[str, float]:
    scores = _rouge().score(reference, prediction)  # rouge-score takes (target, prediction)
    return {name: scores[name].fmeasure for name in _ROUGE_TYPES}


def example_scores(prediction: str, reference: str) -> dict[str, float]:
    """Per-example scores, for reading the worst cases."""
    import sacrebleu

    return {
        "exact_match": exact_match(prediction, reference),
        "jaccard": jaccard(prediction, reference),
        **rouge(prediction, reference),
        "bleu": sacrebleu.sentence_bleu(prediction, [reference]).score,
    }


def corpus_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Split-level metrics: means of the per-example scores, and corpus BLEU."""
    per = [example_scores(p, r) for p, r in zip(predictions, references)]
    return summarize(per, predictions, references)


def summarize(per: list[dict[str, float]], predictions: list[str], references: list[str]) -> dict[str, float]:
    """Split-level metrics from per-example scores already computed (by example_scores)."""
    import sacrebleu

    n = len(per)
    if n == 0:
        return {**{m: 0.0 for m in METRICS}, "n": 0}
    mean = lambda key: sum(s[key] for s in per) / n  # noqa: E731
    return {
        "exact_match": round(100 * mean("exact_match"), 4),
        "jaccard": round(mean("jaccard"), 6),
        **{name: round(mean(name), 6) for name in _ROUGE_TYPES},
        "bleu": round(sacrebleu.corpus_bleu(predictions, [references]).score, 4),
        "n": n,
    }
