"""`loraops compare`: verdict, exit status, reference selection and missing metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import CONFIGS, fake_metrics, make_run, sha256_of

from loraops.cli import main
from loraops.records import METRICS


def fake_run(root: Path, name: str, model_name: str = "default") -> Path:
    return make_run(root / "runs", name, model_name=model_name)


def run_compare(tmp_path: Path, run: Path, *extra: str) -> int:
    return main(
        [
            "compare",
            "--config-dir",
            str(CONFIGS),
            f"run={run}",
            f"metrics_dir={tmp_path / 'm'}",
            f"reference_file={tmp_path / 'reference.json'}",
            *extra,
        ]
    )


def test_improvement_exits_0_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": 80.0, "dev": 70.0})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 0.0, "dev": 0.0})
    assert run_compare(tmp_path, run) == 0
    out = capsys.readouterr().out
    assert "verdict: IMPROVED against baseline/default" in out and "exact_match on test: +81.25" in out
    assert "test: 26 fixed, 0 broken (by exact_match)" in out
    saved = json.loads((tmp_path / "m" / "r1" / "comparison.json").read_text())
    assert saved["verdict"] == "IMPROVED" and saved["reference_kind"] == "base"
    assert len(saved["flips"]["test"]["fixed"]) == 26 and saved["flips"]["test"]["broken"] == []
    assert {(r["split"], r["metric"]) for r in saved["rows"]} == {(s, m) for s in ("test", "dev") for m in METRICS}


def test_no_improvement_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": 10.0})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 10.0})
    assert run_compare(tmp_path, run) == 1
    assert "NOT IMPROVED" in capsys.readouterr().out
    assert run_compare(tmp_path, run, "primary_metric=rouge1") == 1  # equal is not better
    fake_metrics(tmp_path / "m", "r1", {"test": 40.0})
    assert run_compare(tmp_path, run, "min_delta=35") == 1
    assert run_compare(tmp_path, run) == 0


def test_missing_reference_metrics_name_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": 80.0})
    assert run_compare(tmp_path, run) == 2
    assert "make eval-baseline" in capsys.readouterr().err
    assert run_compare(tmp_path, fake_run(tmp_path, "r2")) == 2
    assert "make eval" in capsys.readouterr().err
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 0.0})  # the reference alone is not enough
    assert run_compare(tmp_path, tmp_path / "runs" / "r2") == 2
    assert "no metrics for r2 on split 'test'" in capsys.readouterr().err


def test_reference_missing_a_secondary_split_is_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": 80.0, "adversarial": 40.0})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 0.0})
    assert run_compare(tmp_path, run) == 0
    out = capsys.readouterr().out
    assert "no metrics for split 'adversarial'; produce them with: make eval-baseline" in out
    assert "n/a" in out


def test_published_run_becomes_the_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "r2")
    fake_metrics(tmp_path / "m", "r2", {"test": 50.0})
    fake_metrics(tmp_path / "m", "r1", {"test": 80.0})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 0.0})
    assert run_compare(tmp_path, run, "against=published") == 2
    assert "no run has been published yet" in capsys.readouterr().err
    (tmp_path / "reference.json").write_text(json.dumps({"run": "r1"}))
    assert run_compare(tmp_path, run) == 1
    assert "r2 vs r1 (published)" in capsys.readouterr().out
    assert run_compare(tmp_path, run, "against=base") == 0


def test_the_published_run_itself_is_compared_with_the_base(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": 80.0})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 0.0})
    (tmp_path / "reference.json").write_text(json.dumps({"run": "r1"}))
    assert run_compare(tmp_path, run) == 0
    assert "r1 vs baseline/default (base)" in capsys.readouterr().out
    assert run_compare(tmp_path, run, "against=published") == 2
    assert "is itself the published reference" in capsys.readouterr().err


def test_a_smaller_sample_is_refused_with_the_command_that_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": 100.0}, n=1)  # `eval limit=1`
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 0.0}, n=64)
    assert run_compare(tmp_path, run) == 2
    err = capsys.readouterr().err
    assert "split 'test' was not scored the same way on both sides" in err and "n: 1 vs 64" in err
    assert f"loraops eval model={run.resolve()} eval_dir=data/eval limit=null max_new_tokens=64" in err
    fake_metrics(tmp_path / "m", "r1", {"test": 100.0}, n=64, generation={"max_new_tokens": 8})
    assert run_compare(tmp_path, run) == 2
    assert "generation:" in capsys.readouterr().err


def test_one_answer_on_32_is_inconclusive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": [True] * 20 + [False] * 12})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": [True] * 19 + [False] * 13})
    assert run_compare(tmp_path, run) == 3
    out = capsys.readouterr().out
    assert "verdict: INCONCLUSIVE" in out and "p=1" in out and "test: 1 fixed, 0 broken" in out


def test_a_guarded_split_that_collapses_refuses_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": 90.0, "dev": 10.0})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 0.0, "dev": 90.0})
    assert run_compare(tmp_path, run) == 1
    out = capsys.readouterr().out
    assert "verdict: NOT IMPROVED" in out and "guard dev/exact_match: dropped -81.25" in out
    assert run_compare(tmp_path, run, "guards=[]") == 0  # unguarded, the primary split alone decides


def test_flips_on_a_hand_built_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": [True, False, True, False]}, n=4)
    fake_metrics(tmp_path / "m", "baseline/default", {"test": [False, True, True, False]}, n=4)
    run_compare(tmp_path, run, "--flips", "5")
    out = capsys.readouterr().out
    assert "test: 1 fixed, 1 broken" in out
    assert "fixed: 'question 0'" in out and "broken: 'question 1'" in out
    flips = json.loads((tmp_path / "m" / "r1" / "comparison.json").read_text())["flips"]["test"]
    assert [f["prompt"] for f in flips["fixed"]] == ["question 0"]
    assert [f["prompt"] for f in flips["broken"]] == ["question 1"]
    assert flips["broken"][0]["reference"] == flips["broken"][0]["expected"] != flips["broken"][0]["fine_tuned"]


def test_training_data_that_holds_eval_examples_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(json.dumps({"prompt": f"question {i}", "completion": "x"}) + "\n" for i in range(4)))
    run = make_run(
        tmp_path / "runs",
        "r1",
        manifest={"data": {"files": [{"name": "train.jsonl", "path": str(train_file), "sha256": "x"}]}},
    )
    fake_metrics(tmp_path / "m", "r1", {"test": 100.0})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 0.0})
    assert run_compare(tmp_path, run) == 0  # compare reports; publish refuses (test_publish_local)
    assert "leakage: 4 of 32 test examples are also in the training data (4 exactly)" in capsys.readouterr().out
    overlap = json.loads((tmp_path / "m" / "r1" / "comparison.json").read_text())["overlap"]["test"]
    assert overlap == {"n": 32, "exact": 4, "near": 4, "share": 0.125}


def test_scores_are_recomputed_never_trusted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": 10.0})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 10.0})
    predictions = tmp_path / "m" / "r1" / "test.predictions.jsonl"
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    forged = [{**row, "scores": rows[0]["scores"]} for row in rows]  # a right answer's scores; answers unchanged
    predictions.write_text("".join(json.dumps(row) + "\n" for row in forged))
    assert run_compare(tmp_path, run) == 2
    err = capsys.readouterr().err
    assert f"{predictions}:4: the stored scores do not match the prediction and the reference" in err
    assert "evaluate again" in err and "IMPROVED" not in err
    assert not (tmp_path / "m" / "r1" / "comparison.json").exists()  # nothing judged, nothing recorded

    predictions.write_text("".join(json.dumps(row) + "\n" for row in rows))  # the answers' own scores again
    record = tmp_path / "m" / "r1" / "test.json"
    forged_record = json.loads(record.read_text())
    forged_record["metrics"]["exact_match"] = 100.0
    record.write_text(json.dumps(forged_record))
    assert run_compare(tmp_path, run) == 2
    assert f"{record}: the recorded metrics do not match its predictions (exact_match 100.0" in capsys.readouterr().err


def test_references_edited_to_match_the_answers_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A forgery with consistent scores: each wrong answer made "right" by changing what it was expected to be."""
    from loraops.eval.metrics import example_scores

    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": 10.0})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 50.0})
    folder = tmp_path / "m" / "r1"
    rows = [json.loads(line) for line in (folder / "test.predictions.jsonl").read_text().splitlines()]
    forged = [
        {**row, "reference": row["prediction"], "scores": example_scores(row["prediction"], row["prediction"], "13a")}
        for row in rows
    ]

    def write(rows: list[dict[str, Any]]) -> None:
        (folder / "test.predictions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        record = json.loads((folder / "test.json").read_text())
        record["metrics"] = {**record["metrics"], "exact_match": 100.0, "jaccard": 1.0, "bleu": 100.0}
        record["metrics"].update(rouge1=1.0, rouge2=1.0, rougeL=1.0)
        (folder / "test.json").write_text(json.dumps(record))

    write(forged)
    assert run_compare(tmp_path, run) == 2
    assert "test.predictions.jsonl:4: the prompt or reference is not the one evaluated" in capsys.readouterr().err
    write([{**row, "id": sha256_of([row["messages"], row["reference"]])[:16]} for row in forged])  # ids forged too
    assert run_compare(tmp_path, run) == 2
    assert "these rows are not the examples the split's record names" in capsys.readouterr().err
    assert not (folder / "comparison.json").exists()


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            lambda row: {k: v for k, v in row.items() if k != "scores"},
            ":9: not a prediction row (`scores`: Field required)",
        ),
        (
            lambda row: {**row, "scores": {**row["scores"], "bleu": "high"}},
            ":9: not a prediction row (`scores.bleu`: Value error, must be a number, got 'high')",
        ),
        (lambda row: "{broken", ":9: not a prediction row (Invalid JSON"),
    ],
    ids=["no-scores", "not-a-number", "broken-line"],
)
def test_a_broken_prediction_row_is_named_by_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Any, fragment: str
) -> None:
    run = fake_run(tmp_path, "r1")
    fake_metrics(tmp_path / "m", "r1", {"test": 80.0})
    fake_metrics(tmp_path / "m", "baseline/default", {"test": 0.0})
    predictions = tmp_path / "m" / "r1" / "test.predictions.jsonl"
    lines = predictions.read_text().splitlines()
    changed = change(json.loads(lines[8]))
    lines[8] = changed if isinstance(changed, str) else json.dumps(changed)
    predictions.write_text("\n".join(lines) + "\n")
    assert run_compare(tmp_path, run) == 2
    err = capsys.readouterr().err
    assert f"{predictions}{fragment}" in err and "Traceback" not in err
