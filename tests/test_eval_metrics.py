"""Metric functions: hand-computed cases, and ROUGE/BLEU against the libraries' own results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from loraops.eval.metrics import METRICS, corpus_metrics, exact_match, example_scores, jaccard, rouge

FORMATS = Path(__file__).parent / "data" / "formats"


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
    # Tokens: words and each punctuation mark; `=DRIFT(B1:B9, 2)` shares 8 of 10 distinct tokens with its reference.
    assert m["jaccard"] == pytest.approx((1 + 8 / 10 + 0) / 3, abs=1e-5)
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-3)
    assert corpus_metrics(refs, refs)["bleu"] == pytest.approx(100)
    assert corpus_metrics([], [])["n"] == 0


def test_example_scores_use_sentence_bleu() -> None:
    s = example_scores("=DRIFT(B1:B9, 2)", "=DRIFT(B1:B9, 4)")
    assert s["bleu"] == pytest.approx(sacrebleu.sentence_bleu("=DRIFT(B1:B9, 2)", ["=DRIFT(B1:B9, 4)"]).score)
    assert s["exact_match"] == 0.0 and 0 < s["rougeL"] < 1


@pytest.mark.parametrize(
    ("reference", "unrelated", "bleu_tokenizer"),
    [
        ("我的名字是小明，我是一个人工智能助手。", "今天北京下雨，气温很低。", "zh"),
        ("私の名前はハナコです。よろしくお願いします。", "明日は雨が降るでしょう。", "char"),
        ("Die Größe des Fußballfelds beträgt hundert Meter.", "Ich trinke morgens gern grünen Tee.", "intl"),
        ("Launch the rocket 🚀 at dawn 🌅 please", "Bake bread 🍞 tonight 🌙 slowly", "13a"),
    ],
    ids=["chinese", "japanese", "german", "emoji"],
)
def test_scores_mean_the_same_in_every_language(reference: str, unrelated: str, bleu_tokenizer: str) -> None:
    from loraops.eval.text import bleu_tokenizer as choose

    assert choose([reference]) == bleu_tokenizer
    same = example_scores(reference, reference, bleu_tokenizer)
    assert same["exact_match"] == same["jaccard"] == same["rouge1"] == same["rougeL"] == 1.0
    assert same["bleu"] == pytest.approx(100)
    other = example_scores(unrelated, reference, bleu_tokenizer)
    assert other["rouge1"] < 0.2 and other["rougeL"] < 0.2 and other["jaccard"] < 0.2 and other["bleu"] < 10
    assert corpus_metrics([reference], [reference])["rougeL"] == 1.0


def test_cjk_answers_score_partial_credit_by_character() -> None:
    s = example_scores("我是小明", "我的名字是小明", "zh")
    assert 0.5 < s["rouge1"] < 1 and 0.5 < s["jaccard"] < 1  # 4 of its 4 characters appear in the reference


def test_answer_match_judges_gsm8ks_final_answer_not_the_worked_solution() -> None:
    from loraops.eval.metrics import answer_match

    gsm8k = [json.loads(line) for line in (FORMATS / "question_answer.jsonl").read_text().splitlines()]
    for record in gsm8k:
        final = record["answer"].rsplit("####", 1)[1].strip()
        assert exact_match(f"The answer is {final}.", record["answer"]) == 0.0
        assert answer_match(f"Step by step... so the answer is {final}.", record["answer"]) == 1.0
        assert answer_match(f"#### {final}", record["answer"]) == 1.0
        assert answer_match(f"#### {int(final.replace(',', '')) + 1}", record["answer"]) == 0.0
    assert answer_match("It costs $1,000.00 in total", "#### 1000") == 1.0
    assert answer_match(r"so \boxed{\frac{1}{2}}", r"\boxed{\frac{1}{2}}") == 1.0
    assert answer_match("Paris", "Paris") == 1.0 and answer_match("paris is it", "Paris") == 0.0
