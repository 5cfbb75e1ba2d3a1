"""Config composition, overrides and validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import CONFIGS

from loraops.cli import main
from loraops.config import ALL_PROJECTIONS, EvalConfig, TrainConfig, help_rows, load_config
from loraops.errors import ConfigError, LoraopsError


def test_defaults_train_the_embedded_model_on_sample_data() -> None:
    cfg = load_config(TrainConfig, CONFIGS, "train", [])
    assert cfg.model_name == "default" and cfg.dataset_path == "data" and cfg.dataset_pattern == "*"
    assert cfg.data_source.type == "local"


def test_train_yaml_sets_every_schema_key() -> None:
    from loraops.config import compose, schema_keys

    composed = compose(CONFIGS, "train", [])  # train.yaml with configs/remote.yaml
    written = [f"{k}.{sub}" for k, v in composed.items() if hasattr(v, "items") for sub in v] + list(composed)
    assert sorted(written) == sorted(schema_keys(TrainConfig))


def test_overrides_are_applied() -> None:
    cfg = load_config(TrainConfig, CONFIGS, "train", ["lr=1e-4", "lora_r=8", "lora_target_modules=[q_proj,v_proj]"])
    assert (cfg.lr, cfg.lora_r, cfg.lora_target_modules) == (1e-4, 8, ["q_proj", "v_proj"])


def test_llama3_preset() -> None:
    cfg = load_config(TrainConfig, CONFIGS, "train_llama3_8b", [])
    assert cfg.model_name == "meta-llama/Meta-Llama-3-8B"
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_target_modules) == (64, 128, ALL_PROJECTIONS)
    assert cfg.bf16 and cfg.gradient_checkpointing
    assert (cfg.batch_size, cfg.max_length, cfg.gradient_accumulation_steps) == (8, 512, 4)
    assert (cfg.lr_scheduler_type, cfg.warmup_ratio) == ("cosine", 0.03)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("lora_rr=8", "unknown config key `lora_rr` (command-line override); did you mean `lora_r`?"),
        ("learning_rate=1", "did you mean"),
        ("data_source.typ=local", "did you mean `data_source.type`?"),
        ("lr=abc", "lr='abc' must be a number"),
        ("epochs=1.5", "epochs=1.5 must be a whole number"),
        ("lr=-0.1", "lr=-0.1 must be positive"),
        ("lora_r=0", "lora_r=0 must be at least 1"),
        ("lr_scheduler_type=sawtooth", "lr_scheduler_type='sawtooth' must be one of"),
        ("data_format=csv", "data_format='csv' must be one of"),
        ("warmup_ratio=1.5", "warmup_ratio=1.5 must be in [0, 1)"),
        ("lora_dropout=1", "lora_dropout=1 must be in [0, 1)"),
        ("max_steps=0", "max_steps=0 must be -1 (all epochs) or at least 1"),
        ("seed=-1", "seed=-1 must be in [0, 4294967295]"),  # numpy's range: a traceback before
        ("lr=inf", "lr=inf must be a finite number"),
        ("val_metrics=[bleu,meteor]", "val_metrics=['bleu', 'meteor'] must be among exact_match"),
        ("num_train_epochs=2", "did you mean `epochs`?"),  # what transformers calls it
        ("lr=", "lr"),
    ],
)
def test_invalid_config_is_a_clear_error(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, CONFIGS, "train", [override])
    assert fragment in str(err.value)


def test_a_temperature_too_small_to_sample_with_is_refused() -> None:
    with pytest.raises(ConfigError, match="temperature=1e-300 must be at least 1e-05"):
        load_config(EvalConfig, CONFIGS, "eval", ["do_sample=true", "temperature=1e-300"])  # logits / t overflow


def test_keys_that_need_validation_are_refused_without_it() -> None:
    load_config(TrainConfig, CONFIGS, "train", ["eval_strategy=no"])  # valid alone
    with pytest.raises(ConfigError, match="select_metric='bleu' needs validation, but eval_strategy is no"):
        load_config(TrainConfig, CONFIGS, "train", ["eval_strategy=no", "select_metric=bleu"])


def test_unknown_key_in_yaml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("defaults:\n  - _self_\nepochz: 2\n")
    with pytest.raises(ConfigError, match=r"unknown config key `epochz` \(.*mine.yaml\); did you mean `epochs`"):
        load_config(TrainConfig, tmp_path, "mine", [])


def test_missing_config_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match="available: .*train"):
        load_config(TrainConfig, CONFIGS, "nope", [])


def test_cli_exits_2_on_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config-dir", str(CONFIGS), "lr=-1"]) == 2
    assert "lr=-1 must be positive" in capsys.readouterr().err


def test_every_key_has_help() -> None:
    assert all(text for _, _, text in help_rows(TrainConfig))


def test_model_name_resolution(tmp_path: Path) -> None:
    from loraops.models import resolve_model_path

    (tmp_path / "folder").mkdir()
    for bad, fragment in [
        (str(tmp_path / "missing.gguf"), "does not exist"),
        (str(tmp_path / "folder"), "config.json"),
        ("./no/such/model", "neither an existing folder nor a hub id"),
        ("a/b/c", "neither an existing folder nor a hub id"),
    ]:
        with pytest.raises(LoraopsError, match=fragment):
            resolve_model_path(bad)


def test_hub_ids_fail_fast_offline_and_use_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    import shutil
    import socket

    from loraops.models import resolve_model_path

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with socket.socket() as listening:  # a Hub that answers
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listening.getsockname()[1]}")
        assert resolve_model_path("meta-llama/Meta-Llama-3-8B") == "meta-llama/Meta-Llama-3-8B"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed.getsockname()[1]}")  # nothing listens
    with pytest.raises(LoraopsError, match="not in the local Hugging Face cache, and http://127.0.0.1:.* cannot be"):
        resolve_model_path("meta-llama/Meta-Llama-3-8B")
    repo = tmp_path / "hub" / "models--acme--tiny"  # a cached download, as huggingface_hub lays it out
    shutil.copytree(tiny_model_dir, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert resolve_model_path("acme/tiny") == str(repo / "snapshots" / "abc123")
