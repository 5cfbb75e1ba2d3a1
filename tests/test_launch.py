"""How a job uses the machine's GPUs and CPUs, decided on CPU with the GPU queries stood in for: processes per
GPU, never DataParallel, cuda_visible_devices before anything starts CUDA, native bf16 only, and every
combination that cannot run refused up front (exit 2)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from support import CONFIGS

from loraops import environment
from loraops.cli import main
from loraops.config import TrainConfig, load_config
from loraops.distributed import sharding_of
from loraops.errors import ConfigError
from loraops.launch import Launch, plan
from loraops.loading import quantization_kwargs
from loraops.trainer import check_one_gpu_per_process


def cfg(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, CONFIGS, "train", list(overrides))


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> Any:
    """This process sees as many GPUs as CUDA_VISIBLE_DEVICES lists (4 when it is unset), as CUDA would count."""
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)

    def count(device: str = "auto") -> int:
        if device == "cpu":
            return 0
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return 4 if visible is None else len([v for v in visible.split(",") if v])

    monkeypatch.setattr(environment, "gpu_count", count)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)  # no deepspeed, flash-attn, kernels
    return count


def test_several_gpus_get_one_process_each_by_default(gpus: Any) -> None:
    launch = plan(cfg())
    assert launch == Launch(processes=4, sharding=None, gpus=4) and launch.relaunches(None)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    fsdp = plan(cfg("accelerate_config=fsdp", "val_metrics=[]"))  # validation by loss: sharded weights can do it
    assert fsdp == Launch(processes=4, sharding="fsdp", gpus=4) and fsdp.relaunches("fsdp")


def test_one_process_with_several_gpus_takes_the_first_never_dataparallel(
    gpus: Any, caplog: pytest.LogCaptureFixture
) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = "2,3"
    with caplog.at_level(logging.INFO, logger="loraops"):
        launch = plan(cfg("num_processes=1"))
    assert launch == Launch(processes=1, sharding=None, gpus=1) and not launch.relaunches(None)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2"  # before CUDA starts: the Trainer then sees one GPU
    assert "training on GPU 2 only; num_processes=null (the default) trains on all 2" in caplog.text
    with pytest.raises(ConfigError, match="one training process sees 2 GPUs"):
        check_one_gpu_per_process(SimpleNamespace(n_gpu=2))  # the guard, should anything else let it through
    check_one_gpu_per_process(SimpleNamespace(n_gpu=1))


def test_cuda_visible_devices_comes_first_and_bounds_the_processes(gpus: Any) -> None:
    launch = plan(cfg("cuda_visible_devices='1,3'"))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1,3"  # set here, so the launched processes inherit it
    assert (launch.processes, launch.gpus) == (2, 2)
    with pytest.raises(ConfigError, match=r"num_processes=3, but 2 GPUs are visible \(CUDA_VISIBLE_DEVICES=1,3\)"):
        plan(cfg("cuda_visible_devices='1,3'", "num_processes=3"))


def test_under_a_launcher_the_launchers_processes_count(gpus: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "8", "ACCELERATE_USE_FSDP": "true"}.items():
        monkeypatch.setenv(name, value)
    launch = plan(cfg("num_processes=1", "val_metrics=[]"))
    assert launch == Launch(processes=8, sharding="fsdp", gpus=4) and not launch.relaunches("fsdp")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # each process takes its GPU by LOCAL_RANK


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["accelerate_config=deepspeed_zero3"], "needs DeepSpeed: pip install deepspeed"),
        (
            ["accelerate_config=fsdp", "lora_init=pissa", "val_metrics=[]"],
            "lora_init=pissa with fsdp: PiSSA and OLoRA are converted",
        ),
        (["accelerate_config=fsdp"], r"val_metrics=\['exact_match'\] generates answers at each validation"),
        (["attn_implementation=flash_attention_2"], "needs flash-attn, which is not installed"),
        (["attn_implementation=kernels-community/flash-attn"], r"needs kernels \(pip install kernels\)"),
    ],
)
def test_what_cannot_run_on_these_gpus_is_refused_up_front(gpus: Any, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan(cfg(*overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["accelerate_config=fsdp"], "accelerate_config=fsdp: accelerate's configs place processes on GPUs"),
        (["attn_implementation=flash_attention_2"], "runs on CUDA GPUs only; use sdpa on the CPU"),
        (["device=cuda"], "device=cuda: a GPU is asked for but torch cannot use it"),
        (["attn_implementation=flash"], "must be one of sdpa, eager, flash_attention_2"),
    ],
)
def test_what_cannot_run_on_this_cpu_exits_2_before_anything_loads(
    tiny_overrides: list[str], capsys: pytest.CaptureFixture[str], overrides: list[str], message: str
) -> None:
    assert main(["train", "--config-dir", str(CONFIGS), *tiny_overrides, *overrides]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_sharding_is_read_from_the_accelerate_config(tmp_path: Path) -> None:
    assert [sharding_of(n) for n in (None, "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3")] == [
        None,
        None,
        "fsdp",
        "zero2",
        "zero3",
    ]
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        f"distributed_type: DEEPSPEED\ndeepspeed_config:\n  deepspeed_config_file: {tmp_path / 'ds.json'}\n"
    )
    assert sharding_of(str(mine)) == "zero3"


def test_bf16_only_where_the_gpu_has_it_in_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    asked: list[bool] = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:  # a T4: bf16 by emulation only
        asked.append(including_emulation)
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert environment.detect(True, None).precision == "fp16" and asked == [False]
    kwargs = quantization_kwargs(True)
    assert kwargs["quantization_config"].bnb_4bit_compute_dtype == torch.float16


def test_a_4bit_base_is_stored_in_its_compute_dtype_and_placed_by_the_sharding(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(environment, "native_bf16", lambda: True)
    monkeypatch.setattr("loraops.loading.native_bf16", lambda: True)
    alone, sharded = quantization_kwargs(True), quantization_kwargs(True, sharded=True)
    for kwargs in (alone, sharded):
        config = kwargs["quantization_config"]
        assert config.bnb_4bit_quant_storage == config.bnb_4bit_compute_dtype == torch.bfloat16  # one flat dtype
    assert alone["device_map"] == {"": 0} and "device_map" not in sharded


def test_a_gpu_torch_cannot_use_stops_unless_the_cpu_was_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def old_driver() -> bool:
        warnings.warn("CUDA initialization: The NVIDIA driver on your system is too old (found 11040).", stacklevel=2)
        return False

    monkeypatch.setattr(torch.cuda, "is_available", old_driver)
    with pytest.raises(ConfigError, match=r"a GPU is present but torch cannot use it \(CUDA initialization: The NV"):
        environment.cuda_available("auto")
    assert environment.cuda_available("cpu") is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(environment, "_nvidia_gpu_present", lambda: True)  # and a CPU-only build of torch
    with pytest.raises(ConfigError, match=r"built without CUDA\); install a torch build .* or train on the CPU with"):
        environment.cuda_available("auto")
    monkeypatch.setattr(environment, "_nvidia_gpu_present", lambda: False)
    assert environment.cuda_available("auto") is False  # no GPU at all: the CPU, quietly


def test_cpu_threads_follow_affinity_and_the_cgroup_quota(tmp_path: Path) -> None:
    assert environment.usable_cpus({0, 1, 2, 3}, tmp_path) == 4  # no quota
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert environment.usable_cpus({0, 1, 2, 3}, tmp_path) == 2  # 1.5 CPUs of quota: 2 threads
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert environment.usable_cpus({0, 1}, tmp_path) == 2


def test_a_busy_machine_gets_fewer_threads_and_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(environment, "usable_cpus", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    try:
        with caplog.at_level(logging.WARNING, logger="loraops"):
            assert environment.use_cpu_threads(None, 2) == 1 and torch.get_num_threads() == 1
        assert "this machine is busy (load 3.0 on 2 usable CPUs)" in caplog.text
        assert environment.use_cpu_threads(2, 1) == 2  # cpu_threads=2 chosen
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert environment.use_cpu_threads(None, 1) == 1  # OMP_NUM_THREADS, the user's or torchrun's, is kept
    finally:
        torch.set_num_threads(before)


def test_the_trainers_arguments_exist_before_the_model_loads(
    tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ZeRO-3 loads each process's shard only when transformers knows of it: from the TrainingArguments."""
    import loraops.train as train_module

    order: list[str] = []
    arguments, load = train_module.training_arguments, train_module.load_causal_lm
    monkeypatch.setattr(
        train_module, "training_arguments", lambda *a, **k: order.append("arguments") or arguments(*a, **k)
    )
    monkeypatch.setattr(train_module, "load_causal_lm", lambda *a, **k: order.append("model") or load(*a, **k))
    train_module.train(cfg(*tiny_overrides, "max_steps=1", "attn_implementation=eager"))
    assert order == ["arguments", "model"]


def test_the_attention_kernel_is_the_one_asked_for(tiny_model_dir: Path) -> None:
    import torch

    from loraops.loading import load_causal_lm

    assert (
        load_causal_lm(str(tiny_model_dir), torch.float32, attn_implementation="eager").config._attn_implementation
        == "eager"
    )


def test_a_4bit_base_keeps_embeddings_in_the_compute_dtype(tiny_model_dir: Path) -> None:
    """PEFT's k-bit preparation upcasts everything not quantised to fp32; embeddings and LM head go back."""
    import torch

    from loraops.loading import load_causal_lm
    from loraops.train import _prepared_4bit

    config = cfg("gradient_checkpointing=true")
    model = _prepared_4bit(load_causal_lm(str(tiny_model_dir), torch.bfloat16), config, torch.bfloat16, sharded=False)
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert model.get_output_embeddings().weight.dtype == torch.bfloat16
    assert model.model.norm.weight.dtype == torch.float32  # norms stay fp32, as PEFT and TRL keep them
    sharded = _prepared_4bit(load_causal_lm(str(tiny_model_dir), torch.bfloat16), config, torch.bfloat16, sharded=True)
    assert {p.dtype for p in sharded.parameters()} == {torch.bfloat16}  # one dtype for FSDP's flat parameters


def test_a_failed_process_is_reported_by_its_status_not_a_launcher_traceback(tmp_path: Path) -> None:
    script = tmp_path / "fails.py"
    script.write_text("import sys\nprint('loraops: error: bad data', file=sys.stderr)\nsys.exit(2)\n")
    command = [sys.executable, "-m", "loraops.launcher", "torchrun", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*command, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "loraops: error: bad data" in done.stderr
    assert "Traceback" not in done.stderr and "ChildFailedError" not in done.stderr


def test_a_data_error_with_several_processes_is_said_once_before_launching(
    tiny_overrides: list[str], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data" / "train.jsonl").write_text('{"prompt": "p"}\n')
    assert main(["train", "--config-dir", str(CONFIGS), *tiny_overrides, "num_processes=2"]) == 2
    err = capfd.readouterr().err
    assert err.count("loraops: error:") == 1 and "train.jsonl:1" in err and "launching" not in err
