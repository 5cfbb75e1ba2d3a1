"""Two training processes on CPU (gloo), launched by `num_processes=2` through torchrun, as on a multi-GPU server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import CONFIGS

from loraops.cli import main
from loraops.config import TrainConfig, load_config
from loraops.distributed import launch_command
from loraops.errors import ConfigError
from loraops.runs import RunDir
from loraops.train import train


def adapter(run: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return load_file(run / "model" / "adapter_model.safetensors")


def test_two_processes_match_one_with_twice_the_accumulation(
    tiny_overrides: list[str], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Dropout off: its masks differ by process. Each step then sees all 16 examples either way, in any order.
    same = [*tiny_overrides, "batch_size=8", "lora_dropout=0", "epochs=3"]
    assert main(["train", "--config-dir", str(CONFIGS), *same, "num_processes=2"]) == 0
    runs = tmp_path / "runs"
    (two,) = [p for p in runs.iterdir() if not p.is_symlink()]
    assert (runs / "latest").resolve() == two.resolve() and capfd.readouterr().out.count("run: ") == 1
    metrics = RunDir(two).read_metrics().as_dict()
    assert (
        metrics["processes"] == 2
        and metrics["global_steps"] == 3
        and metrics["train_tokens"] == 3 * metrics["data"]["tokens"]
    )
    assert RunDir(two).is_finished() and not (two / "checkpoints").exists()
    assert len(list((two / "logs").iterdir())) == 1  # one TensorBoard file: only the main process writes
    assert (two / "train.log").read_text().count("global batch: 8 per device x 1 accumulation x 2 processes = 16") == 1

    one = train(load_config(TrainConfig, CONFIGS, "train", [*same, "gradient_accumulation_steps=2"])).run_dir
    a, b = adapter(two), adapter(one)
    assert a.keys() == b.keys()
    for key in a:
        assert float((a[key] - b[key]).abs().max()) < 1e-5, key  # the stated tolerance: float summation order


def test_launch_commands_are_the_standard_launchers() -> None:
    torchrun = launch_command(4, None, ["train", "lr=1e-4"])
    assert torchrun[1:7] == ["-m", "loraops.launcher", "torchrun", "--standalone", "--nproc_per_node", "4"]
    assert torchrun[-4:] == ["-m", "loraops", "train", "lr=1e-4"]
    fsdp = launch_command(2, "fsdp", ["train"])
    assert fsdp[1:5] == ["-m", "loraops.launcher", "accelerate", "--config_file"]
    assert fsdp[5].endswith("configs/accelerate/fsdp.yaml") and fsdp[6:8] == ["--num_processes", "2"]
    with pytest.raises(ConfigError, match="accelerate_config=zero9: no such file .shipped: ddp, deepspeed_zero2"):
        launch_command(2, "zero9", ["train"])


def test_shipped_accelerate_configs_are_valid() -> None:
    import yaml

    for name in ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"):
        config = yaml.safe_load((CONFIGS / "accelerate" / f"{name}.yaml").read_text())
        assert config["distributed_type"] in ("MULTI_GPU", "FSDP", "DEEPSPEED"), name
        if name.startswith("deepspeed"):
            assert config["deepspeed_config"]["zero_stage"] == int(name[-1])
    assert json.dumps(config)  # plain data, nothing Python-specific


def test_a_two_process_run_stopped_midway_resumes(tiny_overrides: list[str], tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    args = [
        *tiny_overrides,
        "batch_size=2",
        "epochs=10",
        "save_strategy=steps",
        "save_steps=2",
        "logging_steps=50",
        "num_processes=2",
    ]
    command = [sys.executable, "-m", "loraops", "train", "--config-dir", str(CONFIGS), *args]
    launcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 120
    while not list(runs.glob("*/checkpoints/checkpoint-*/trainer_state.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=60) != 0
    (run,) = [p for p in runs.iterdir() if not p.is_symlink()]
    assert RunDir(run).status() == "interrupted" and RunDir(run).last_checkpoint() is not None
    assert not (runs / "latest").exists()

    assert main(["train", "--config-dir", str(CONFIGS), *args, f"resume_from={run}"]) == 0
    metrics = RunDir(run).read_metrics().as_dict()
    assert RunDir(run).is_finished() and metrics["global_steps"] == 40  # 10 epochs x 16 examples / (2 x 2 processes)
    assert "checkpoint-" in metrics["resumed_from"] and (runs / "latest").resolve() == run.resolve()


def test_validation_answers_are_shared_among_processes_and_scored_together(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each process generates every world-th answer; all of them, gathered back in order, are scored as one
    process scores them alone (so DDP does not generate the same answers N times)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loraops import distributed
    from loraops.eval.data import EvalExample
    from loraops.eval.generate import GenerationSettings
    from loraops.trainer import ValidationGenerator, interleaved

    assert interleaved([[0, 2, 4], [1, 3]]) == [0, 1, 2, 3, 4] and interleaved([[0], []]) == [0]
    model, tokenizer = (
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    torch.manual_seed(0)
    examples = [
        EvalExample([{"role": "user", "content": f"question {i}"}], f"answer {i}", "val.jsonl", i + 1) for i in range(5)
    ]
    generator = ValidationGenerator(tokenizer, examples, ["jaccard", "rougeL"], GenerationSettings(6), 1)
    alone = generator(model)
    shares: dict[int, list[object]] = {}

    def as_rank(rank: int) -> dict[str, float]:
        monkeypatch.setattr(distributed, "rank", lambda: rank)
        monkeypatch.setattr(
            distributed, "gathered", lambda rows: shares.setdefault(rank, rows) and [shares[0], shares.get(1, [])]
        )
        return generator(model)

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    as_rank(0)
    together = as_rank(1)  # rank 1 gathers both shares
    assert [len(shares[0]), len(shares[1])] == [3, 2]  # each generated its share only
    assert together == alone
