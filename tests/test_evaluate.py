"""`loraops eval` on a tiny trained run: artifacts, run records, baseline keying."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import CONFIGS, write_jsonl

from loraops.cli import main
from loraops.config import EvalConfig, load_config
from loraops.eval.evaluate import evaluate
from loraops.runs import RunDir


@pytest.fixture
def tiny_run(trained_run_copy: Path) -> Path:
    return trained_run_copy  # evaluation adds to the run's records


@pytest.fixture
def eval_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "evalsets"
    write_jsonl(
        folder / "test.jsonl",
        [{"prompt": f"Rolling sum of A1:A{n}", "completion": f"=FLOWROLL(A1:A{n}, 2)"} for n in range(5, 11)],
    )
    write_jsonl(
        folder / "dev.jsonl",
        [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}],
    )
    return folder


def eval_overrides(run: Path, eval_dir: Path, tmp_path: Path) -> list[str]:
    return [
        f"model={run}",
        f"eval_dir={eval_dir}",
        f"metrics_dir={tmp_path / 'metrics'}",
        "max_new_tokens=6",
        "batch_size=4",
    ]


def test_eval_writes_metrics_predictions_and_run_records(tiny_run: Path, eval_dir: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = evaluate(load_config(EvalConfig, CONFIGS, "eval", eval_overrides(tiny_run, eval_dir, tmp_path)))
    out = tmp_path / "metrics" / tiny_run.name
    assert result.out_dir == out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["dev.json", "dev.predictions.jsonl", "test.json", "test.predictions.jsonl", "summary.json"]
    )
    test = json.loads((out / "test.json").read_text())
    assert test["split"] == "test" and test["metrics"]["n"] == 6
    assert {"exact_match", "jaccard", "rouge1", "rouge2", "rougeL", "bleu"} <= set(test["metrics"])
    rows = [json.loads(line) for line in (out / "test.predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and rows[0]["reference"] == "=FLOWROLL(A1:A5, 2)" and rows[0]["line"] == 1
    assert {"exact_match", "jaccard", "rougeL", "bleu"} <= set(rows[0]["scores"])
    assert set(result.metrics) == {"test", "dev", "overall"} and result.metrics["overall"]["n"] == 7

    run_metrics = RunDir(tiny_run).read_metrics()
    assert run_metrics.eval["test"]["n"] == 6 and run_metrics.train_loss is not None
    events = EventAccumulator(str(tiny_run / "logs"))
    events.Reload()
    assert "eval/test/exact_match" in events.Tags()["scalars"]


def test_baseline_is_keyed_by_base_model(tiny_run: Path, eval_dir: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    overrides = eval_overrides(tiny_run, eval_dir, tmp_path) + ["splits=[test]"]
    first = evaluate(load_config(EvalConfig, CONFIGS, "eval_baseline", overrides))
    assert first.target.adapter_dir is None and first.out_dir.parent == tmp_path / "metrics" / "baseline"
    assert first.target.base_model == str(tiny_model_dir)
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    second = evaluate(load_config(EvalConfig, CONFIGS, "eval_baseline", overrides + [f"model_name={other}"]))
    assert second.out_dir != first.out_dir and (second.out_dir / "test.json").is_file()
    assert RunDir(tiny_run).read_metrics().eval == {}  # a baseline is not the run's score


def test_eval_errors_exit_2(tiny_run: Path, eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(eval_dir / "broken.jsonl", [{"prompt": "p", "completion": "c"}, {"prompt": "p", "answer": "c"}])
    args = ["eval", "--config-dir", str(CONFIGS), *eval_overrides(tiny_run, eval_dir, tmp_path)]
    assert main(args) == 2
    assert f"{eval_dir / 'broken.jsonl'}:2: cannot tell the format" in capsys.readouterr().err
    assert main(["eval", "--config-dir", str(CONFIGS), f"model={tmp_path / 'nope'}"]) == 2
    assert "no such run; train one first" in capsys.readouterr().err


def test_a_split_gets_its_own_reply_length_and_a_warning_when_answers_are_cut(
    tiny_run: Path, eval_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = [*eval_overrides(tiny_run, eval_dir, tmp_path), "split_max_new_tokens={dev: 2}", "max_new_tokens=3"]
    with caplog.at_level("WARNING", logger="loraops"):
        result = evaluate(load_config(EvalConfig, CONFIGS, "eval", overrides))
    out = tmp_path / "metrics" / tiny_run.name
    lengths = {
        split: {
            json.loads(line)["new_tokens"] for line in (out / f"{split}.predictions.jsonl").read_text().splitlines()
        }
        for split in ("test", "dev")
    }
    assert max(lengths["dev"]) <= 2 and max(lengths["test"]) <= 3
    cut = [r.getMessage() for r in caplog.records if "ran into max_new_tokens" in r.getMessage()]
    assert any(m.startswith("test: ") and "split_max_new_tokens='{test: 12}'" in m for m in cut), cut
    assert "answer_match" in result.metrics["test"]


def test_a_continuation_run_is_evaluated_on_continuation_prompts(
    tiny_run: Path, eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = RunDir(tiny_run)
    run.write_config({**run.read_config(), "prompt_completion": "continuation"})
    assert main(["eval", *eval_overrides(tiny_run, eval_dir, tmp_path)]) == 2
    assert "prompt_completion=continuation" in capsys.readouterr().err
