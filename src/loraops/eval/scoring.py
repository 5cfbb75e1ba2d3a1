"""Answer eval examples and score the answers: the one path by which `loraops eval`, validation during
training and publish's proof turn a model and examples into scores, so their numbers always agree."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from loraops.errors import LoraopsError
from loraops.eval.data import EvalExample
from loraops.eval.fingerprint import asked
from loraops.eval.generate import Generation, GenerationSettings, generate
from loraops.eval.metrics import example_scores, summarize
from loraops.eval.preference import are_pairs, preference_metrics, preference_scores
from loraops.eval.text import bleu_tokenizer
from loraops.records import SCORED, Prediction, Scores

_TOLERANCE = 1e-9  # the scorer is deterministic: a stored score differs only when something else wrote it


def predictions(examples: list[EvalExample], generations: list[Generation], bleu_tokenize: str) -> list[Prediction]:
    """One scored row per example: what was asked and expected, the answer, and its scores."""
    return [
        Prediction(
            **asked(e),
            prediction=g.text,
            stopped_at_eos=g.stopped,
            new_tokens=g.new_tokens,
            scores=example_scores(g.text, e.reference, bleu_tokenize),
        )
        for e, g in zip(examples, generations)
    ]


def split_metrics(rows: list[Prediction], bleu_tokenize: str) -> Scores:
    """A split's scores from its scored rows, and how often the model ended its answer itself (a preference
    split's: how often its pairs' chosen answer is the likelier)."""
    if are_pairs(rows):
        return preference_metrics(rows)
    answers, references = [r.prediction for r in rows], [r.reference for r in rows]
    metrics = summarize([r.scores for r in rows], answers, references, bleu_tokenize)
    metrics["stopped_at_eos_pct"] = round(100 * sum(r.stopped_at_eos for r in rows) / max(1, len(rows)), 2)
    return metrics


def generate_and_score(
    model: Any,
    tokenizer: Any,
    examples: list[EvalExample],
    settings: GenerationSettings,
    batch_size: int,
    progress: bool = True,
    tokenize: str | None = None,
) -> tuple[Scores, list[Prediction]]:
    """Generate an answer to every example and score it: the split's metrics and per-example rows.

    BLEU's tokenizer is chosen from the references unless `tokenize` names it (and recorded by the caller).
    """
    tokenize = tokenize or bleu_tokenizer(e.reference for e in examples)
    started = time.monotonic()
    generations = generate(model, tokenizer, [e.prompt for e in examples], settings, batch_size, progress)
    rows = predictions(examples, generations, tokenize)
    return {**split_metrics(rows, tokenize), "generation_s": round(time.monotonic() - started, 2)}, rows


def rescored(rows: list[Prediction], bleu_tokenize: str, where: Path) -> list[Prediction]:
    """The rows with every score recomputed from the prediction and the reference. Stored scores are a cache:
    one that disagrees means the file was changed after evaluation, and nothing is judged on it."""
    fresh = [row.model_copy(update={"scores": _scores(row, bleu_tokenize)}) for row in rows]
    for line, (stored, row) in enumerate(zip(rows, fresh), start=1):
        # A metric added since the file was written is computed, not checked.
        wrong = [m for m in SCORED if m in stored.scores and not _agrees(stored.scores[m], row.scores[m])]
        if wrong:
            shown = ", ".join(f"{m} {stored.scores.get(m)!r} (recomputed: {row.scores[m]:.6g})" for m in wrong)
            raise LoraopsError(
                f"{where}:{line}: the stored scores do not match the prediction and the reference ({shown}); the "
                "file was changed after `loraops eval`, so it is not judged: evaluate again"
            )
    return fresh


def _scores(row: Prediction, bleu_tokenize: str) -> dict[str, float]:
    """A row's scores from what it records: its answer and reference, or a pair's two log-likelihoods."""
    if row.rejected is not None:
        if row.logps is None or set(row.logps) != {"chosen", "rejected"}:
            raise LoraopsError("a preference row without its answers' log-likelihoods: evaluate again")
        return preference_scores(row.logps)
    return example_scores(row.prediction, row.reference, bleu_tokenize)


def check_split_metrics(record: Scores, rows: list[Prediction], bleu_tokenize: str, where: Path) -> Scores:
    """The split's metrics recomputed from its rows; the recorded ones must agree (same rule as `rescored`)."""
    fresh = split_metrics(rows, bleu_tokenize)
    wrong = [m for m in SCORED if m in record and m in fresh and not _agrees(record[m], fresh[m], rounded=True)]
    if wrong:
        shown = ", ".join(f"{m} {record[m]!r} (recomputed: {fresh[m]:.6g})" for m in wrong)
        raise LoraopsError(
            f"{where}: the recorded metrics do not match its predictions ({shown}); the files were changed after "
            "`loraops eval`, so they are not judged: evaluate again"
        )
    return {**record, **{m: fresh[m] for m in SCORED if m in fresh}}


def _agrees(stored: Any, fresh: float, rounded: bool = False) -> bool:
    """Equal up to float noise (and, for split metrics, up to the rounding `summarize` applies)."""
    if not isinstance(stored, (int, float)) or isinstance(stored, bool):
        return False
    return math.isclose(float(stored), fresh, rel_tol=_TOLERANCE, abs_tol=1e-4 if rounded else _TOLERANCE)
