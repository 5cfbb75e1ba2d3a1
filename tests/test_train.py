"""Training runs on a tiny random Llama: run folder layout, records, adapter, failure handling."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from support import CONFIGS, write_jsonl

from loraops.cli import main
from loraops.config import TrainConfig, load_config
from loraops.runs import RunDir
from loraops.train import train


def run_tiny(overrides: list[str]) -> Path:
    return train(load_config(TrainConfig, CONFIGS, "train", overrides)).run_dir


def test_run_folder_holds_everything(trained_run: Path) -> None:
    run = trained_run  # the default config with the tiny overrides, trained once for the session
    assert (run.parent / "latest").resolve() == run.resolve()
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (run / "model" / name).is_file(), name

    used = yaml.safe_load((run / "config_used.yaml").read_text())
    assert used["lr"] == 5e-3 and used["lora_r"] == 4 and used["epochs"] == 2 and "data_source" in used

    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["epoch_train_loss"]) == 2
    assert metrics["global_steps"] == 8  # 16 examples / batch 4 * 2 epochs
    data = metrics["data"]
    assert {k: data[k] for k in ("records", "examples", "truncated", "dropped_all_masked", "formats")} == {
        "records": 16,
        "examples": 16,
        "truncated": 0,
        "dropped_all_masked": 0,
        "formats": {"prompt_completion": 16},
    }
    assert list(data["files"].values()) == [{"prompt_completion": 16}] and data["lengths"]["max"] > 0
    assert metrics["train_tokens"] == 2 * metrics["data"]["tokens"]  # padding is not counted
    assert metrics["tokens_per_second"] > 0 and metrics["runtime_s"] > 0
    assert metrics["precision"] == "fp32"

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert [Path(f["path"]).name for f in manifest["data"]["files"]] == ["train.jsonl"]
    assert len(manifest["data"]["dataset_sha256"]) == 64
    assert manifest["libraries"]["torch"] and manifest["libraries"]["peft"]
    assert "commit" in manifest["git"] and manifest["environment"]["device"] == "cpu"


def test_tensorboard_gets_loss_lr_and_grad_norm(trained_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = trained_run
    events = EventAccumulator(str(run / "logs"))
    events.Reload()
    assert {"train/loss", "train/learning_rate", "train/grad_norm"} <= set(events.Tags()["scalars"])
    assert len(events.Scalars("train/loss")) >= 8


def test_adapter_is_trained_and_loads_with_peft(trained_run: Path, tiny_model_dir: Path) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = trained_run
    weights = load_file(run / "model" / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and any(w.abs().sum() > 0 for w in lora_b)  # B starts at zero: non-zero means it learned

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / "model")
    tok = AutoTokenizer.from_pretrained(run / "model")
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert torch.isfinite(model(**ids).logits).all()


def test_hyperparameters_reach_the_trainer(tmp_path: Path) -> None:
    from loraops.environment import Environment
    from loraops.trainer import training_arguments

    cfg = load_config(
        TrainConfig,
        CONFIGS,
        "train",
        [
            "lr=3e-4",
            "lr_scheduler_type=linear",
            "warmup_ratio=0.1",
            "weight_decay=0.01",
            "gradient_accumulation_steps=2",
            "seed=7",
            "gradient_checkpointing=true",
            "batch_size=3",
            "epochs=4",
            "max_steps=11",
        ],
    )
    args = training_arguments(cfg, RunDir(tmp_path), Environment("cpu", "cpu", "fp32", None), validating=False)
    assert (args.learning_rate, args.lr_scheduler_type.value, args.warmup_steps) == (3e-4, "linear", 0.1)
    assert (args.weight_decay, args.gradient_accumulation_steps, args.seed) == (0.01, 2, 7)
    assert (args.per_device_train_batch_size, args.num_train_epochs, args.max_steps) == (3, 4, 11)
    checkpointing = getattr(args, "activation_checkpointing", None) or args.gradient_checkpointing  # renamed in 5.2x
    assert checkpointing and not args.bf16 and not args.fp16


def test_gradient_checkpointing_and_accumulation_train(tiny_overrides: list[str]) -> None:
    run = run_tiny(tiny_overrides + ["gradient_checkpointing=true", "gradient_accumulation_steps=2", "epochs=1"])
    assert RunDir(run).read_metrics().global_steps == 2


def test_bf16_on_cpu_falls_back_to_fp32(tiny_overrides: list[str], caplog: pytest.LogCaptureFixture) -> None:
    run = run_tiny(tiny_overrides + ["bf16=true", "max_steps=1"])
    assert RunDir(run).read_metrics().precision == "fp32"
    assert "running in fp32 on CPU" in caplog.text


def test_failed_run_never_becomes_latest(
    tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = run_tiny(tiny_overrides + ["max_steps=1"])

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated crash")

    monkeypatch.setattr("loraops.train._fit", boom)
    with pytest.raises(RuntimeError):
        run_tiny(tiny_overrides)
    runs = tmp_path / "runs"
    assert (runs / "latest").resolve() == good.resolve()
    failed = [p for p in runs.iterdir() if p.is_dir() and not p.is_symlink() and p != good]
    assert len(failed) == 1
    assert RunDir(failed[0]).read_manifest().status == "failed"


def test_bad_data_exits_2_before_any_run_folder(
    tiny_overrides: list[str], small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(small_dataset / "zz.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "a", "completoin": "b"}])
    assert main(["train", "--config-dir", str(CONFIGS), *tiny_overrides]) == 2
    err = capsys.readouterr().err
    assert (
        f"{small_dataset / 'zz.jsonl'}:2: cannot tell the format of a record with fields `completoin`, `prompt`" in err
        and "`completoin` looks like `completion` misspelt" in err
    )
    assert not (tmp_path / "runs").exists()


def test_max_length_that_masks_everything_is_an_error(
    tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--config-dir", str(CONFIGS), *tiny_overrides, "max_length=8"]) == 2
    assert "raise max_length" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_secrets_never_reach_run_records_or_output(
    tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = {"HF_TOKEN": "hf_" + "Q" * 34, "LAKEFS_SECRET_KEY": "lakefs-secret-" + "Z" * 20}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    prompt = "system_prompt='Use the key ${oc.env:HF_TOKEN} wisely.'"  # a secret interpolated into a value
    assert main(["train", "--config-dir", str(CONFIGS), *tiny_overrides, "max_steps=2", prompt]) == 0
    captured = capsys.readouterr()
    (run,) = [p for p in (tmp_path / "runs").iterdir() if not p.is_symlink()]
    assert "Use the key <redacted> wisely." in (run / "config_used.yaml").read_text()
    texts = [captured.out, captured.err]
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", errors="replace"))
    for value in secrets.values():
        assert not any(value in text for text in texts)
    assert os.environ["HF_TOKEN"] == secrets["HF_TOKEN"]


def test_interrupted_run_resumes_from_its_checkpoint(
    tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loraops.callbacks import LossLogCallback
    from loraops.errors import ConfigError

    overrides = tiny_overrides + ["save_strategy=steps", "save_steps=2"]

    def crash_at_step_3(self: object, args: object, state: object, control: object, **kwargs: object) -> None:
        if state.global_step == 3:  # type: ignore[attr-defined]
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(LossLogCallback, "on_step_end", crash_at_step_3, raising=False)
    with pytest.raises(RuntimeError):
        run_tiny(overrides)
    monkeypatch.undo()
    (run,) = [p for p in (tmp_path / "runs").iterdir()]
    assert RunDir(run).read_manifest().status == "failed"
    assert (run / "checkpoints" / "checkpoint-2").is_dir() and not (tmp_path / "runs" / "latest").exists()
    # kill -9 while the next checkpoint was being written: its weights are cut short.
    broken = run / "checkpoints" / "checkpoint-4"
    shutil.copytree(run / "checkpoints" / "checkpoint-2", broken)
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert RunDir(run).last_checkpoint() == str(run / "checkpoints" / "checkpoint-2")

    with pytest.raises(ConfigError, match=r"config changed since the run started \(lr: 0.005 -> 0.001\)"):
        run_tiny(overrides + [f"resume_from={run}", "lr=1e-3"])
    resumed = run_tiny(overrides + [f"resume_from={run}"])
    assert resumed == run and (tmp_path / "runs" / "latest").resolve() == run
    metrics = RunDir(run).read_metrics().as_dict()
    assert metrics["global_steps"] == 8 and metrics["resumed_from"].endswith("checkpoint-2")
    assert metrics["loss_history"][0]["step"] == 1 and len(metrics["epoch_train_loss"]) == 2
    assert not (run / "checkpoints").exists()
    with pytest.raises(ConfigError, match="that run finished"):
        run_tiny(overrides + [f"resume_from={run}"])


def test_checkpoint_problems_are_found(tmp_path: Path) -> None:
    import torch

    from loraops.runs import checkpoint_problem

    checkpoint = tmp_path / "checkpoint-6"
    checkpoint.mkdir()
    assert "trainer_state.json is missing" in (checkpoint_problem(checkpoint) or "")
    (checkpoint / "trainer_state.json").write_text('{"global_step": 6}')
    torch.save({"state": torch.zeros(1000)}, checkpoint / "optimizer.pt")
    assert checkpoint_problem(checkpoint) is None
    data = (checkpoint / "optimizer.pt").read_bytes()
    (checkpoint / "optimizer.pt").write_bytes(data[: len(data) // 2])
    assert "optimizer.pt is" in (checkpoint_problem(checkpoint) or "")


@pytest.mark.slow
def test_sigterm_records_interrupted_and_keeps_checkpoints(tiny_overrides: list[str], tmp_path: Path) -> None:
    """docker stop, systemd and batch schedulers send SIGTERM: treated like Ctrl-C, exit status 143."""
    import signal
    import subprocess
    import sys
    import time

    args = [*tiny_overrides, "epochs=500", "save_strategy=steps", "save_steps=1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "loraops", "train", "--config-dir", str(CONFIGS), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    runs = tmp_path / "runs"
    try:
        for _ in range(600):  # up to a minute for the first checkpoint, however busy the machine
            if any(runs.glob("*/checkpoints/checkpoint-*/trainer_state.json")) or proc.poll() is not None:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "loraops: terminated" in err
    (run,) = [p for p in runs.iterdir() if p.name != "latest"]
    assert RunDir(run).status() == "interrupted" and RunDir(run).last_checkpoint() is not None
