"""PEFT variants as switches (DoRA, rsLoRA, initialisations, modules_to_save) and QLoRA's settings and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import CONFIGS

from loraops.cli import main
from loraops.config import TrainConfig, load_config
from loraops.runs import RunDir
from loraops.train import train


def run_tiny(overrides: list[str]) -> RunDir:
    return RunDir(train(load_config(TrainConfig, CONFIGS, "train", overrides)).run_dir)


def adapter_config(run: RunDir) -> dict[str, object]:
    return json.loads((run.model_dir / "adapter_config.json").read_text())


def test_dora_rslora_and_modules_to_save_reach_the_adapter(tiny_overrides: list[str], tiny_model_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = run_tiny(
        tiny_overrides + ["max_steps=2", "use_dora=true", "use_rslora=true", "lora_modules_to_save=[lm_head]"]
    )
    config = adapter_config(run)
    assert config["use_dora"] and config["use_rslora"]
    # The tiny model ties lm_head to the embeddings: PEFT trains (and saves) them as the one tied module.
    assert config["modules_to_save"] in (["lm_head"], ["model.embed_tokens"]) and config["ensure_weight_tying"]
    assert "use_dora: true" in run.config_path.read_text()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run.model_dir)
    names = [n for n, _ in model.named_parameters()]
    assert any("lora_magnitude_vector" in n for n in names) and any("modules_to_save" in n for n in names)


def test_pissa_is_saved_as_a_plain_lora_for_the_untouched_base(
    tiny_overrides: list[str], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(RunDir, "remove_checkpoints", lambda self: None)
    run = run_tiny(
        tiny_overrides + ["max_steps=2", "lora_init=pissa", "lora_dropout=0", "save_strategy=steps", "save_steps=2"]
    )
    config = adapter_config(run)
    assert config["r"] == 8 and config["init_lora_weights"] is True  # rank 2r, a plain LoRA
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    # What training computed: PiSSA's mutated base with the trained adapter (checkpoint-2)...
    trained = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(
            r=4, lora_alpha=8, target_modules=list(TrainConfig().lora_target_modules), init_lora_weights="pissa"
        ),
    )
    set_peft_model_state_dict(trained, load_file(run.checkpoints_dir / "checkpoint-2" / "adapter_model.safetensors"))
    # ...and what a user gets: the published adapter on the untouched base.
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run.model_dir)
    with torch.no_grad():
        assert torch.allclose(trained.eval()(ids).logits, loaded.eval()(ids).logits, atol=1e-4)


def test_unknown_lora_init_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "lora_init=loftq"]) == 2
    assert "lora_init='loftq' must be one of default, gaussian, pissa, olora" in capsys.readouterr().err


def test_qlora_without_cuda_stops_before_anything_heavy(
    tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *tiny_overrides, "load_in_4bit=true"]) == 2
    assert "load_in_4bit=true: QLoRA needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert main(["train", "--config-name", "train_llama3_8b_qlora"]) == 2  # the shipped preset, on this CPU machine
    assert "QLoRA needs a CUDA GPU" in capsys.readouterr().err


def test_qlora_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from loraops.loading import quantization_kwargs

    assert quantization_kwargs(False) == {}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    kwargs = quantization_kwargs(True)
    q = kwargs["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16 and kwargs["device_map"] == {"": 3}
    cfg = load_config(TrainConfig, CONFIGS, "train_llama3_8b_qlora", [])
    assert cfg.load_in_4bit and cfg.gradient_checkpointing and cfg.model_name == "meta-llama/Meta-Llama-3-8B"


def test_liger_without_cuda_stops_before_anything_heavy(
    tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *tiny_overrides, "liger_kernel=true"]) == 2
    assert "liger_kernel=true: Liger's kernels are Triton kernels and run on CUDA GPUs only" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_liger_and_compile_reach_the_trainer_arguments(tmp_path: Path) -> None:
    from loraops import environment
    from loraops.runs import RunDir
    from loraops.trainer import training_arguments

    cfg = load_config(TrainConfig, CONFIGS, "train", ["liger_kernel=true", "torch_compile=true"])
    env = environment.detect(False)
    args = training_arguments(cfg, RunDir(tmp_path / "run"), env, validating=False)
    assert args.use_liger_kernel and args.torch_compile
    defaults = training_arguments(load_config(TrainConfig, CONFIGS, "train", []), RunDir(tmp_path), env, False)
    assert not defaults.use_liger_kernel and not defaults.torch_compile
