"""Validation during training: the held-out split, the kept (best) adapter, early stopping, divergence."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
from support import CONFIGS, PC_RECORDS, write_jsonl

from loraops.cli import main
from loraops.config import TrainConfig, load_config
from loraops.data.formats import Example
from loraops.data.validation import select_validation
from loraops.errors import ConfigError, DataError
from loraops.runs import RunDir
from loraops.train import train


def run_tiny(overrides: list[str]) -> Path:
    return train(load_config(TrainConfig, CONFIGS, "train", overrides)).run_dir


# Validation answers in words training never uses: as the model moves probability to its training
# answers, the validation loss rises, so the best checkpoint comes before the last.
UNRELATED = [{"prompt": r["prompt"], "completion": "Восемь лошадей пьют чай под луной"} for r in PC_RECORDS[:4]]


@pytest.fixture
def val_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "val.jsonl", UNRELATED)


@pytest.fixture
def overfit(tiny_overrides: list[str], val_file: Path) -> list[str]:
    """Validate after every step of a run that learns its training answers fast."""
    return tiny_overrides + [
        f"val_path={val_file}",
        "eval_strategy=steps",
        "eval_steps=1",
        "lr=1e-2",
        "val_metrics=[]",
        "epochs=3",
        "logging_steps=1",
    ]


def examples(n: int) -> list[Example]:
    return [
        Example(
            [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
            "messages",
            "data/train.jsonl",
            i + 1,
        )
        for i in range(n)
    ]


def test_held_out_records_are_disjoint_from_training_and_stable(tmp_path: Path) -> None:
    cfg = load_config(TrainConfig, CONFIGS, "train", ["val_fraction=0.2"])
    records = examples(200) + examples(3)  # the last three repeat earlier records
    first = select_validation(cfg, records, [])
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    again = select_validation(cfg, shuffled, [])
    key = lambda e: json.dumps(e.messages)  # noqa: E731
    assert {key(e) for e in first.validation} == {key(e) for e in again.validation}  # order does not matter
    assert not {key(e) for e in first.validation} & {key(e) for e in first.training}  # duplicates land together
    assert len(first.training) + len(first.validation) == len(records) and 20 <= len(first.validation) <= 60
    assert first.source["type"] == "held_out" and len(first.source["records"]) == len(first.validation)
    assert first.source["records"][0] == {"file": "data/train.jsonl", "line": first.validation[0].line}


def test_held_out_fraction_that_leaves_a_side_empty_is_an_error() -> None:
    cfg = load_config(TrainConfig, CONFIGS, "train", ["val_fraction=0.001"])
    with pytest.raises(ConfigError, match=r"val_fraction=0.001 held out no record of 3"):
        select_validation(cfg, examples(3), [])


def test_validation_needs_data_when_selection_or_early_stopping_is_asked(tiny_overrides: list[str]) -> None:
    with pytest.raises(
        ConfigError, match=r"select_metric=exact_match needs validation data.*eval/dev.jsonl does not exist"
    ):
        run_tiny(tiny_overrides + ["select_metric=exact_match"])
    with pytest.raises(ConfigError, match=r"early_stopping_patience=2 needs validation, but eval_strategy is no"):
        load_config(TrainConfig, CONFIGS, "train", ["eval_strategy=no", "early_stopping_patience=2"])
    with pytest.raises(DataError, match="val_path: no such file"):
        run_tiny(tiny_overrides + ["val_path=nowhere.jsonl"])


def test_kept_adapter_is_the_best_checkpoint_not_the_last(
    overfit: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from safetensors.torch import load_file

    caplog.set_level(logging.INFO, logger="loraops")
    monkeypatch.setattr(RunDir, "remove_checkpoints", lambda self: None)  # keep them to compare
    run = RunDir(run_tiny(overfit + ["max_steps=6"]))
    validation = run.read_metrics().as_dict()["validation"]
    curve = validation["curve"]
    assert [p["step"] for p in curve] == [1, 2, 3, 4, 5, 6]
    losses = [p["loss"] for p in curve]
    best = validation["best"]
    assert best["value"] == min(losses) and best["step"] == 1 + losses.index(min(losses)) < 6
    kept = load_file(run.model_dir / "adapter_model.safetensors")
    saved = load_file(run.checkpoints_dir / f"checkpoint-{best['step']}" / "adapter_model.safetensors")
    assert all(kept[k].equal(saved[k]) for k in kept)
    assert validation["stopped_early"] is None and validation["data"]["records"] == 4
    assert validation["share_of_runtime"] > 0
    assert run.read_manifest().as_dict()["validation"]["path"].endswith("val.jsonl")
    assert "validation at step 1 epoch" in run.train_log.read_text()


def test_tensorboard_gets_the_validation_curve(overfit: list[str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = run_tiny(overfit + ["max_steps=3", "val_metrics=[exact_match]", "val_limit=2", "val_max_new_tokens=3"])
    events = EventAccumulator(str(run / "logs"))
    events.Reload()
    assert len(events.Scalars("eval/loss")) == 3 and len(events.Scalars("eval/exact_match")) == 3


def test_early_stopping_stops_when_validation_stops_improving(overfit: list[str]) -> None:
    run = RunDir(run_tiny(overfit + ["early_stopping_patience=2"]))
    metrics = run.read_metrics().as_dict()
    validation = metrics["validation"]
    assert metrics["global_steps"] < 12  # 16 examples / batch 4 * 3 epochs
    assert validation["stopped_early"]["step"] == metrics["global_steps"] == validation["best"]["step"] + 2
    assert "did not improve by more than 0 in 2 evaluations" in validation["stopped_early"]["reason"]
    assert run.is_finished()


def test_generation_metric_selects_and_is_logged(overfit: list[str]) -> None:
    run = RunDir(run_tiny(overfit + ["max_steps=3", "select_metric=jaccard", "val_limit=2", "val_max_new_tokens=4"]))
    validation = run.read_metrics().as_dict()["validation"]
    assert validation["select_metric"] == "jaccard" and validation["higher_is_better"]
    scores = [p["jaccard"] for p in validation["curve"]]
    assert validation["best"]["value"] == max(scores) and validation["best"]["step"] == 1 + scores.index(max(scores))
    assert "exact_match" not in validation["curve"][0]  # val_metrics=[] and the selection metric is jaccard


def test_resume_after_the_best_checkpoint_keeps_it(
    overfit: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loraops.callbacks import LossLogCallback

    def crash_at_step_5(self: object, args: object, state: object, control: object, **kwargs: object) -> None:
        if state.global_step == 5:  # type: ignore[attr-defined]
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(LossLogCallback, "on_step_end", crash_at_step_5, raising=False)
    with pytest.raises(RuntimeError):
        run_tiny(overfit + ["max_steps=7"])
    monkeypatch.undo()
    (path,) = [p for p in (tmp_path / "runs").iterdir()]
    run = RunDir(path)
    state = json.loads((Path(run.last_checkpoint() or "") / "trainer_state.json").read_text())
    best_before = state["best_global_step"]
    assert best_before < 4 and (run.checkpoints_dir / f"checkpoint-{best_before}").is_dir()

    monkeypatch.setattr(RunDir, "remove_checkpoints", lambda self: None)
    run_tiny(overfit + ["max_steps=7", f"resume_from={path}"])
    validation = run.read_metrics().as_dict()["validation"]
    assert [p["step"] for p in validation["curve"]] == list(range(1, 8))  # the whole life, not just the resumed part
    best = validation["best"]["step"]
    assert best == best_before or validation["curve"][best - 1]["loss"] < state["best_metric"]
    from safetensors.torch import load_file

    kept = load_file(run.model_dir / "adapter_model.safetensors")
    saved = load_file(run.checkpoints_dir / f"checkpoint-{best}" / "adapter_model.safetensors")
    assert all(kept[k].equal(saved[k]) for k in kept)


@pytest.mark.parametrize("steps", [[], ["max_steps=1"]], ids=["mid-run", "on-the-last-step"])
def test_diverging_run_fails_fast_and_leaves_latest_alone(
    tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], steps: list[str]
) -> None:
    good = run_tiny(tiny_overrides + ["max_steps=1"])
    assert main(["train", *tiny_overrides, "lr=1e30", "warmup_ratio=0", *steps]) == 2
    err = capsys.readouterr().err
    assert "training diverged at step" in err and "lr=1e+30" in err and "Traceback" not in err
    assert "after the last update" in err or not steps  # the check that runs once training stopped
    runs = tmp_path / "runs"
    assert (runs / "latest").resolve() == good.resolve()
    (failed,) = [p for p in runs.iterdir() if p.is_dir() and not p.is_symlink() and p != good]
    manifest = RunDir(failed).read_manifest().as_dict()
    assert manifest["status"] == "failed" and "diverged" in manifest["error"]
    assert not (failed / "model").exists() and not (failed / "metrics.json").exists()
