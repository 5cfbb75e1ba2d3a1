"""Metric functions: hand-computed cases, and ROUGE/BLEU against the libraries' own results."""

from __future__ import annotations

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from loraops.eval.metrics import METRICS, corpus_metrics, exact_match, example_scores, jaccard, rouge


def test_exact_match_ignores_whitespace_layout_only() -> None:
    assert exact_match("  =FLOWROLL(A1:A9,  3)\n", "=FLOWROLL(A1:A9, 3)") == 1.0
    assert exact_match("=flowroll(A1:A9, 3)", "=FLOWROLL(A1:A9, 3)") == 0.0
    assert exact_match("", "") == 1.0


def test_jaccard_hand_computed() -> None:
    assert jaccard("a b c", "b c d") == pytest.approx(2 / 4)
    assert jaccard("a a b", "a b") == 1.0  # sets, not multisets
    assert jaccard("", "") == 1.0 and jaccard("a", "") == 0.0


def test_rouge_hand_computed_and_against_library() -> None:
    assert rouge("the cat sat", "the cat ran")["rouge1"] == pytest.approx(2 / 3)
    assert rouge("the cat sat", "the cat ran")["rouge2"] == pytest.approx(1 / 2)
    pred, ref = "the cats were running quickly home", "a cat runs home quickly"
    expected = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(ref, pred)
    assert rouge(pred, ref) == {k: pytest.approx(v.fmeasure) for k, v in expected.items()}
    assert rouge(pred, ref)["rouge1"] > 0.5  # stemming: cats/cat, running/runs


def test_corpus_metrics() -> None:
    preds = ["=FLOWROLL(A1:A9, 3)", "=DRIFT(B1:B9, 2)", "something else entirely"]
    refs = ["=FLOWROLL(A1:A9, 3)", "=DRIFT(B1:B9, 4)", "=ROUNDTO(C1:C9, 5)"]
    m = corpus_metrics(preds, refs)
    assert set(METRICS) <= set(m) and m["n"] == 3
    assert m["exact_match"] == pytest.approx(100 / 3, abs=1e-3)
    assert m["jaccard"] == pytest.approx((1 + 1 / 3 + 0) / 3, abs=1e-5)
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-3)
    assert corpus_metrics(refs, refs)["bleu"] == pytest.approx(100)
    assert corpus_metrics([], [])["n"] == 0


def test_example_scores_use_sentence_bleu() -> None:
    s = example_scores("=DRIFT(B1:B9, 2)", "=DRIFT(B1:B9, 4)")
    assert s["bleu"] == pytest.approx(sacrebleu.sentence_bleu("=DRIFT(B1:B9, 2)", ["=DRIFT(B1:B9, 4)"]).score)
    assert s["exact_match"] == 0.0 and 0 < s["rougeL"] < 1
