"""Shared fixtures: the real default tokenizer, a tiny random Llama built around it, one tiny trained run
for the whole session, a fake Hugging Face Hub and an empty MLflow store. Helpers are in support.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hub_server import FakeHub
from support import CONFIGS, HUB_TOKEN, PC_RECORDS, save_random_llama, write_jsonl


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from loraops.models import prepare_default_model

    return prepare_default_model()  # instant after `make install`


@pytest.fixture(scope="session")
def tokenizer(default_model_dir: Path) -> Any:
    from loraops.loading import load_tokenizer

    return load_tokenizer(str(default_model_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """A 2-layer, 64-wide Llama with the real tokenizer and chat template: trains in seconds."""
    return save_random_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer, 64, 128, 2)


def _dataset(folder: Path) -> Path:
    """16 prompt/completion records, and an eval/ folder that must never be trained on."""
    write_jsonl(folder / "train.jsonl", PC_RECORDS)
    write_jsonl(folder / "eval" / "test.jsonl", [{"prompt": "never train on me", "completion": "x"}])
    return folder


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    return _dataset(tmp_path / "data")


def tiny(model_dir: Path, dataset: Path, runs: Path) -> list[str]:
    """Overrides that make the default config train the tiny model for a few seconds."""
    return [
        f"model_name={model_dir}",
        f"dataset_path={dataset}",
        f"output_dir={runs}",
        "epochs=2",
        "batch_size=4",
        "lr=5e-3",
        "logging_steps=1",
        "lora_r=4",
        "lora_alpha=8",
    ]


@pytest.fixture
def tiny_overrides(tiny_model_dir: Path, small_dataset: Path, tmp_path: Path) -> list[str]:
    return tiny(tiny_model_dir, small_dataset, tmp_path / "runs")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """One finished tiny training run for the whole session, made as `loraops train` makes it from the default
    config and the tiny overrides (2 epochs of the 16 records; no validation file, so none). Read it, never
    change it: `trained_run_copy` gives a test a copy of its own."""
    from loraops.config import TrainConfig, load_config
    from loraops.train import train

    root = tmp_path_factory.mktemp("trained")
    overrides = tiny(tiny_model_dir, _dataset(root / "data"), root / "runs")
    return train(load_config(TrainConfig, CONFIGS, "train", overrides)).run_dir


@pytest.fixture
def trained_run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the session's trained run under tmp_path/runs/, free to change."""
    copy = tmp_path / "runs" / trained_run.name
    shutil.copytree(trained_run, copy, symlinks=True)
    return copy


@pytest.fixture(scope="session")
def tiny_adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tokenizer: Any) -> Path:
    """A LoRA adapter with random (non-zero) weights on the tiny model, so merging changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora)
    path = tmp_path_factory.mktemp("tiny-adapter")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A fake Hugging Face Hub on 127.0.0.1 that accepts HUB_TOKEN, with every Hub setting pointing at it."""
    from huggingface_hub import constants

    server = FakeHub(HUB_TOKEN).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)  # huggingface_hub's own side requests stay local too
    # File URLs start from this template, set at import; an `endpoint` argument only replaces ENDPOINT in it.
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # the cache: tmp_path/hf/hub
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_HUB_OFFLINE", "HF_REPO_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # Xet storage needs a CAS server; the fake Hub speaks the plain and LFS protocols the client falls back to.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))  # no real login leaks in
    yield server
    server.stop()


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its tables: creating them runs ~140 migrations, so tests copy this one."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path
