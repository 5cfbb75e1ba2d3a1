"""Scores for generated answers. ROUGE and BLEU come from rouge-score and sacrebleu.

The names (records.METRICS) are the same per example and per split. Scales follow each metric's
convention: exact_match and answer_match are percentages, Jaccard overlap and ROUGE F-measures are in
[0, 1], BLEU is sacrebleu's 0-100.

answer_match judges the final answer, not the worked solution around it: the text after GSM8K's last
`#### `, or LaTeX's last `\boxed{...}` (MATH), and otherwise the whole text; a prediction without such a
marker is read by its last number when the reference's answer is a number. Numbers are equal as numbers
(`1,000` = `1000.0`, `$5` = `5`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from loraops.eval.text import RougeTokenizer, bleu_tokenizer, tokens
from loraops.records import METRICS

_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def normalize(text: str) -> str:
    """Collapse runs of whitespace and trim: formatting is not what exact match judges."""
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?%?|-?\$?\.\d+%?")
_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")


def final_answer(text: str) -> str | None:
    """The answer a solution ends on (`#### 42`, `\boxed{42}`); None when it marks none."""
    if "####" in text:
        return text.rsplit("####", 1)[1].strip()
    boxed = _BOXED.findall(text)
    return boxed[-1].strip() if boxed else None


def _number(text: str) -> float | None:
    cleaned = text.strip().rstrip(".").replace(",", "").replace("$", "").rstrip("%")
    try:
        return float(cleaned)
    except ValueError:
        return None


def answer_match(prediction: str, reference: str) -> float:
    """1.0 when the prediction's final answer is the reference's (see the module's note)."""
    expected = final_answer(reference)
    expected = normalize(reference) if expected is None else expected
    given = final_answer(prediction)
    if given is None and _number(expected) is not None:
        numbers = _NUMBER.findall(prediction)
        given = numbers[-1] if numbers else ""
    given = normalize(prediction) if given is None else given
    a, b = _number(given), _number(expected)
    if a is not None and b is not None:
        return float(abs(a - b) <= 1e-6 * max(1.0, abs(b)))
    return float(normalize(given) == normalize(expected))


def jaccard(prediction: str, reference: str) -> float:
    """|A ∩ B| / |A ∪ B| over token sets (words, CJK characters, punctuation); two empty texts agree fully."""
    a, b = set(tokens(prediction)), set(tokens(reference))
    return 1.0 if not a and not b else len(a & b) / len(a | b)


@lru_cache(maxsize=1)
def _rouge() -> Any:
    import logging

    from rouge_score import rouge_scorer

    logging.getLogger("absl").setLevel(logging.WARNING)  # rouge-score announces its tokenizer on every start
    return rouge_scorer.RougeScorer(list(_ROUGE_TYPES), tokenizer=RougeTokenizer())


@lru_cache(maxsize=8)
def bleu_metric(tokenize: str, sentence: bool = False) -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=tokenize, effective_order=sentence)


def rouge(prediction: str, reference: str) -> dict[str, float]:
    scores = _rouge().score(reference, prediction)  # rouge-score takes (target, prediction)
    return {name: scores[name].fmeasure for name in _ROUGE_TYPES}


def example_scores(prediction: str, reference: str, bleu_tokenize: str = "13a") -> dict[str, float]:
    """Per-example scores, for reading the worst cases (BLEU: smoothed sentence BLEU)."""
    return {
        "exact_match": exact_match(prediction, reference),
        "answer_match": answer_match(prediction, reference),
        "jaccard": jaccard(prediction, reference),
        **rouge(prediction, reference),
        "bleu": bleu_metric(bleu_tokenize, sentence=True).sentence_score(prediction, [reference]).score,
    }


def corpus_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Split-level metrics: means of the per-example scores, and corpus BLEU, tokenized for the references."""
    tokenize = bleu_tokenizer(references)
    per = [example_scores(p, r, tokenize) for p, r in zip(predictions, references)]
    return summarize(per, predictions, references, tokenize)


def bleu_stats(predictions: list[str], references: list[str], tokenize: str) -> list[list[int]]:
    """Per-example BLEU sufficient statistics (n-gram matches and totals, lengths): summed, they give corpus BLEU."""
    stats: list[list[int]] = bleu_metric(tokenize)._extract_corpus_statistics(predictions, [references])
    return stats


def bleu_from_stats(stats: Any) -> float:
    """Corpus BLEU from summed statistics; a resample of a corpus is a resample of its rows."""
    return float(bleu_metric("13a")._compute_score_from_stats(list(stats)).score)


def summarize(
    per: list[dict[str, float]], predictions: list[str], references: list[str], bleu_tokenize: str = "13a"
) -> dict[str, float]:
    """Split-level metrics from per-example scores already computed (by example_scores)."""
    n = len(per)
    if n == 0:
        return {**{m: 0.0 for m in METRICS}, "n": 0}
    mean = lambda key: sum(s[key] for s in per) / n  # noqa: E731
    return {
        "exact_match": round(100 * mean("exact_match"), 4),
        "answer_match": round(100 * mean("answer_match"), 4),
        "jaccard": round(mean("jaccard"), 6),
        **{name: round(mean(name), 6) for name in _ROUGE_TYPES},
        "bleu": round(bleu_metric(bleu_tokenize).corpus_score(predictions, [references]).score, 4),
        "n": n,
    }
