"""Shared fixtures: the real default tokenizer and a tiny random Llama built around it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from loraops.models import prepare_default_model

    return prepare_default_model()  # instant after `make install`


@pytest.fixture(scope="session")
def tokenizer(default_model_dir: Path) -> Any:
    from loraops.models import load_tokenizer

    return load_tokenizer(str(default_model_dir))


def save_random_llama(
    path: Path, tokenizer: Any, hidden: int, intermediate: int, layers: int, context: int = 512
) -> Path:
    """A randomly initialised Llama of the given size with the real tokenizer and chat template, saved at `path`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """A 2-layer, 64-wide Llama with the real tokenizer and chat template: trains in seconds."""
    return save_random_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer, 64, 128, 2)


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


PC_RECORDS = [
    {"prompt": f"Rolling sum of A1:A{n} over {n % 7 + 2}", "completion": f"=FLOWROLL(A1:A{n}, {n % 7 + 2})"}
    for n in range(10, 26)
]


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """A data folder with 16 prompt/completion records and an eval/ folder that must be ignored."""
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", PC_RECORDS)
    write_jsonl(data / "eval" / "test.jsonl", [{"prompt": "never train on me", "completion": "x"}])
    return data


@pytest.fixture
def tiny_overrides(tiny_model_dir: Path, small_dataset: Path, tmp_path: Path) -> list[str]:
    """Overrides that make the default config train the tiny model for a few seconds."""
    return [
        f"model_name={tiny_model_dir}",
        f"dataset_path={small_dataset}",
        f"output_dir={tmp_path / 'runs'}",
        "epochs=2",
        "batch_size=4",
        "lr=5e-3",
        "logging_steps=1",
        "lora_r=4",
        "lora_alpha=8",
    ]


@pytest.fixture(scope="session")
def tiny_adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tokenizer: Any) -> Path:
    """A LoRA adapter with random (non-zero) weights on the tiny model, so merging changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False),
    )
    path = tmp_path_factory.mktemp("tiny-adapter")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_run(
    root: Path,
    name: str,
    *,
    model_name: str = "default",
    adapter_dir: Path | None = None,
    status: str = "finished",
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    manifest: dict[str, Any] | None = None,
) -> Path:
    """A run folder written through RunDir, as `loraops train` leaves it; the adapter is copied if given."""
    from loraops.runs import RunDir

    run = RunDir(root / name)
    run.path.mkdir(parents=True)
    if adapter_dir is not None:
        shutil.copytree(adapter_dir, run.model_dir)
    else:
        run.model_dir.mkdir()
    run.write_config({**(config or {}), "model_name": model_name})
    run.write_manifest(status, manifest or {"model_name": model_name})
    if metrics is not None:
        run.write_metrics(metrics)
    return run.path


EVAL_PROMPTS = [[{"role": "user", "content": "word " * n + "end"}] for n in (1, 9, 3, 17, 5, 2, 12, 7)]
