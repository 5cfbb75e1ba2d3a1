"""The model card: Hub metadata, body sections, no private paths, and the base model's license."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loraops.models import DEFAULT_HUB_ID, PublicInfo, front_matter, public_info
from loraops.publish.card import CardInputs, render_card
from loraops.records import Comparison, Manifest, Row, RunMetrics

PRIVATE = "/home/alice/secret-project"
CONFIG = {
    "model_name": "default",
    "dataset_path": f"{PRIVATE}/data",
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_target_modules": ["q_proj", "v_proj"],
    "epochs": 3,
    "lr": 0.0005,
    "batch_size": 8,
    "max_length": 256,
    "seed": 42,
    "output_dir": f"{PRIVATE}/outputs/runs",
}
METRICS = RunMetrics.model_validate(
    {
        "global_steps": 105,
        "epochs_completed": 3.0,
        "first_logged_loss": 2.6,
        "final_logged_loss": 0.005,
        "precision": "fp32",
        "device": "CPU",
        "data": {
            "records": 276,
            "examples": 276,
            "tokens": 20387,
            "formats": {"messages": 87},
            # What `check` names for its user: local paths, which a published card must not carry.
            "dropped_where": [f"{PRIVATE}/data/train_messages.jsonl:3 (900 tokens; its answers start past max_length)"],
            "files": {f"{PRIVATE}/data/train_messages.jsonl": {"messages": 87}},
        },
        "eval": {"test": {"n": 64}, "adversarial": {"n": 32}},
    }
)
MANIFEST = Manifest.model_validate(
    {
        "resolved_model": f"{PRIVATE}/models/SmolLM2",
        "data": {
            "dataset_sha256": "d" * 64,
            "files": [
                {"name": "train_messages.jsonl", "path": f"{PRIVATE}/data/train_messages.jsonl", "sha256": "1" * 64},
                {"name": "train_pc.jsonl", "path": "data/train_pc.jsonl", "sha256": "2" * 64},
            ],
        },
    }
)
FLIP = {
    "id": "x",
    "prompt": "q",
    "expected": "a",
    "fine_tuned": "a",
    "reference": "b",
    "fine_tuned_score": 1,
    "reference_score": 0,
}
COMPARISON = Comparison.model_validate(
    {
        "run": "r1",
        "reference": "baseline/default",
        "reference_kind": "base",
        "primary_split": "test",
        "primary_metric": "exact_match",
        "verdict": "IMPROVED",
        "reasons": ["exact_match on test: +100 [+100, +100], p=1.08e-19: significant at alpha=0.05"],
        "rows": [
            Row(
                split="test",
                metric="exact_match",
                fine_tuned=100.0,
                reference=0.0,
                delta=100.0,
                low=100.0,
                high=100.0,
                p=1.08e-19,
            ),
            Row(split="test", metric="rougeL", fine_tuned=1.0, reference=0.199),
            Row(split="test", metric="bleu", fine_tuned=100.0, reference=3.3),
            Row(
                split="adversarial",
                metric="exact_match",
                fine_tuned=34.4,
                reference=0.0,
                delta=34.4,
                low=18.8,
                high=50.0,
                p=0.0001,
            ),
            Row(split="adversarial", metric="rougeL", fine_tuned=0.747, reference=None),
        ],
        "flips": {"test": {"fixed": [FLIP] * 64, "broken": []}, "adversarial": {"fixed": [FLIP] * 11, "broken": []}},
    }
)


def inputs(**overrides: Any) -> CardInputs:
    values: dict[str, Any] = dict(
        run="r1",
        config=CONFIG,
        metrics=METRICS,
        manifest=MANIFEST,
        base_model=DEFAULT_HUB_ID,
        base_label=DEFAULT_HUB_ID,
        license="apache-2.0",
        merged=False,
        comparison=COMPARISON,
        forced_reason=None,
        load_from="me/tabula",
    )
    return CardInputs(**(values | overrides))


def test_metadata_for_an_adapter() -> None:
    card = render_card(inputs())
    meta = front_matter(card)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["library_name"] == "peft"
    assert meta["license"] == "apache-2.0" and {"loraops", "lora", "peft"} <= set(meta["tags"])
    assert "datasets" not in meta and "forced" not in meta  # a local folder is no Hub dataset id
    assert "Dataset `data`, sha256" in card
    hub = inputs(config=CONFIG | {"data_source": {"type": "hub", "repo_id": "databricks/databricks-dolly-15k"}})
    assert front_matter(render_card(hub))["datasets"] == ["databricks/databricks-dolly-15k"]
    assert "Elsewhere, load the base yourself" in render_card(inputs(local=True))
    assert "Elsewhere" not in card and "Elsewhere" not in render_card(inputs(local=True, merged=True))
    assert meta["loraops"]["dataset_sha256"] == "d" * 64
    assert meta["loraops"]["data_files"] == [
        {"name": "train_messages.jsonl", "sha256": "1" * 64},
        {"name": "train_pc.jsonl", "sha256": "2" * 64},
    ]
    assert PRIVATE not in card and "/data/" not in card  # names and hashes, never paths


def test_body_has_training_hyperparameters_data_eval_and_usage() -> None:
    card = render_card(inputs())
    assert "LoRA adapter (PEFT) for **HuggingFaceTB/SmolLM2-135M-Instruct**" in card and "105 optimizer steps" in card
    assert (
        "| `lora_r` | 16 |" in card
        and "| `lora_target_modules` | q_proj, v_proj |" in card
        and "| `lr` | 0.0005 |" in card
    )
    assert "records 276, examples 276, tokens 20387" in card and "Formats: messages 87." in card
    assert "| `train_messages.jsonl` | `" + "1" * 64 + "` |" in card
    assert "Against `baseline/default` (base)" in card
    assert "| test (64) | 0 → 100 | 0.199 → 1 | 3.3 → 100 |" in card
    assert "| adversarial (32) | 0 → 34.4 | n/a → 0.747 | n/a |" in card
    assert "Verdict: **IMPROVED** on exact_match (test)." in card and "p=1.08e-19" in card
    assert "| test (64) | 0 → 100 |" in card and "+100 [+100, +100] | 1.08e-19 | 64 / 0 |" in card
    assert 'PeftModel.from_pretrained(base, "me/tabula")' in card
    assert 'AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")' in card
    assert render_card(inputs()) == card  # deterministic: a retried upload changes nothing


def test_merged_forced_and_unevaluated_cards() -> None:
    card = render_card(inputs(merged=True, comparison=None, forced_reason="r1 was never evaluated", license=None))
    meta = front_matter(card)
    assert meta["library_name"] == "transformers" and meta["forced"] is True and "license" not in meta
    assert (
        "merged" in meta["tags"]
        and "PeftModel" not in card
        and "Published with --force**: r1 was never evaluated" in card
    )
    assert 'model = AutoModelForCausalLM.from_pretrained("me/tabula")' in card
    assert "Not evaluated against a reference." in card


def test_base_model_public_info(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert public_info("default") == PublicInfo(DEFAULT_HUB_ID, DEFAULT_HUB_ID, "apache-2.0")
    folder = tmp_path / "my-llama"
    folder.mkdir()
    assert public_info(str(folder)) == PublicInfo(None, "my-llama", None)
    (folder / "README.md").write_text("---\nlicense: mit\ntags: [x]\n---\n# my llama\n")
    assert public_info(str(folder)) == PublicInfo(None, "my-llama", "mit")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    hub_id = "meta-llama/Meta-Llama-3-8B"
    assert public_info(hub_id) == PublicInfo(hub_id, hub_id, None)  # not in the cache: no license, no download
    repo = tmp_path / "hub" / "models--meta-llama--Meta-Llama-3-8B"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "README.md").write_text("---\nlicense: llama3\n---\n")
    assert public_info(hub_id) == PublicInfo(hub_id, hub_id, "llama3")


def test_front_matter() -> None:
    assert front_matter("---\nlicense: mit\n---\nbody") == {"license": "mit"}
    assert front_matter("# no metadata") == {} and front_matter("---\n: [\n---\n") == {}
