"""`publish_local`: the gate, the reference record, atomic replacement and the merged model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from support import compare_cfg, evaluated, fake_metrics, finished_run

from loraops.eval.targets import baseline_name
from loraops.models import front_matter
from loraops.publish import NotEvaluatedError, NotImprovedError, PublishResult, publish_local
from loraops.publish import local as local_mod
from loraops.records import DataFileEntry, DataLineage
from loraops.runs import RunDir


def publish(tmp_path: Path, run: Path, **kwargs: Any) -> PublishResult:
    return publish_local(str(run), compare_cfg=compare_cfg(tmp_path), **kwargs)


def test_publish_copies_model_card_and_records_and_sets_reference(tmp_path: Path, tiny_adapter_dir: Path) -> None:
    run = finished_run(tmp_path, "r1", tiny_adapter_dir)
    evaluated(tmp_path, run, 80.0, 0.0)
    result = publish(tmp_path, run)
    dest = tmp_path / "artifacts" / "models" / "r1"
    assert result.path == dest and not result.forced and result.comparison and result.comparison.improved
    expected = {p.name for p in (run / "model").iterdir()} | {"config_used.yaml", "metrics.json", "manifest.json"}
    assert set(result.files) == expected == {p.name for p in dest.iterdir()}
    assert (dest / "adapter_model.safetensors").read_bytes() == (
        run / "model" / "adapter_model.safetensors"
    ).read_bytes()
    card = (dest / "README.md").read_text()
    assert front_matter(card)["library_name"] == "peft" and "PEFT's generic card" not in card
    assert "| test | 0 → 81.25 |" in card
    reference = json.loads((tmp_path / "artifacts" / "reference.json").read_text())
    assert reference["run"] == "r1" and reference["destination"].startswith("local:") and reference["published_at"]
    assert Path(reference["run_dir"]).resolve() == run.resolve()
    assert not (tmp_path / "artifacts" / "reference_history.jsonl").exists()

    # The next run is judged against the published one, and the old reference goes to the history.
    run2 = finished_run(tmp_path, "r2", tiny_adapter_dir)
    fake_metrics(tmp_path / "m", "r2", {"test": 70.0})
    with pytest.raises(NotImprovedError, match="r2 did not beat its reference r1 .published.: NOT IMPROVED"):
        publish(tmp_path, run2)
    fake_metrics(tmp_path / "m", "r2", {"test": 100.0})
    assert publish(tmp_path, run2).comparison.reference == "r1"  # type: ignore[union-attr]
    history = (tmp_path / "artifacts" / "reference_history.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in history] == [reference]
    assert json.loads((tmp_path / "artifacts" / "reference.json").read_text())["run"] == "r2"


def test_a_secret_in_an_older_runs_config_is_scrubbed_from_the_published_copy(
    tmp_path: Path, tiny_adapter_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "hf_" + "S" * 34
    monkeypatch.setenv("HF_TOKEN", secret)
    run = finished_run(tmp_path, "r1", tiny_adapter_dir)
    config = RunDir(run).config_path
    config.write_text(config.read_text() + f"system_prompt: Use the key {secret} wisely.\n")  # as recorded before
    evaluated(tmp_path, run, 80.0, 0.0)
    dest = publish(tmp_path, run).path
    assert "Use the key <redacted> wisely." in (dest / "config_used.yaml").read_text()
    assert not [p for p in dest.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_gate_refuses_with_numbers_and_force_overrides(tmp_path: Path, tiny_adapter_dir: Path) -> None:
    run = finished_run(tmp_path, "r1", tiny_adapter_dir)
    models = tmp_path / "artifacts" / "models"
    fake_metrics(tmp_path / "m", baseline_name("default"), {"test": 0.0})  # the base model was evaluated
    with pytest.raises(NotEvaluatedError, match=r"no metrics for r1 on split 'test'.*make eval \(loraops eval model="):
        publish(tmp_path, run)
    shutil.rmtree(tmp_path / "m")
    evaluated(tmp_path, run, 10.0, None)
    with pytest.raises(NotEvaluatedError, match="make eval-baseline"):
        publish(tmp_path, run)
    evaluated(tmp_path, run, 10.0, 10.0)
    with pytest.raises(NotImprovedError) as refused:
        publish(tmp_path, run)
    message = str(refused.value)
    assert "r1 did not beat its reference baseline/default (base): NOT IMPROVED" in message
    assert "exact_match on test: +0 [+0, +0], p=1" in message and "--force" in message
    assert not models.exists() or not any(models.iterdir())
    assert not (tmp_path / "artifacts" / "reference.json").exists()

    result = publish(tmp_path, run, force=True)
    assert result.forced
    meta = front_matter((models / "r1" / "README.md").read_text())
    assert meta["forced"] is True
    assert "Published with --force" in (models / "r1" / "README.md").read_text()


def test_never_evaluated_force_publishes_and_card_says_so(tmp_path: Path, tiny_adapter_dir: Path) -> None:
    run = finished_run(tmp_path, "r1", tiny_adapter_dir)
    result = publish(tmp_path, run, force=True)
    card = (result.path / "README.md").read_text()  # type: ignore[operator]
    assert result.forced and result.comparison is None
    assert front_matter(card)["forced"] is True and "Not evaluated against a reference." in card


def test_republish_replaces_cleanly_and_failures_leave_nothing_half_done(
    tmp_path: Path, tiny_adapter_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = finished_run(tmp_path, "r1", tiny_adapter_dir)
    evaluated(tmp_path, run, 80.0, 0.0)
    dest = publish(tmp_path, run).path
    assert dest is not None
    (dest / "stray.txt").write_text("from an older publish")
    publish(tmp_path, run)  # the current reference, published again: judged against the base model
    assert not (dest / "stray.txt").exists() and (dest / "README.md").is_file()
    assert [p.name for p in dest.parent.iterdir()] == ["r1"]  # no temp or old copies
    history = (tmp_path / "artifacts" / "reference_history.jsonl").read_text().splitlines()
    assert len(history) == 1 and json.loads(history[0])["run"] == "r1"

    before = sorted(p.name for p in dest.iterdir())
    original_stage = local_mod.stage

    def failing_stage(*args: Any, **kwargs: Any) -> list[str]:
        original_stage(*args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(local_mod, "stage", failing_stage)
    with pytest.raises(OSError, match="disk full"):
        publish(tmp_path, run)
    assert sorted(p.name for p in dest.iterdir()) == before
    assert [p.name for p in dest.parent.iterdir()] == ["r1"]


def test_leftovers_of_a_killed_publish_are_recovered(tmp_path: Path, tiny_adapter_dir: Path) -> None:
    run = finished_run(tmp_path, "r1", tiny_adapter_dir)
    evaluated(tmp_path, run, 80.0, 0.0)
    dest = publish(tmp_path, run).path
    assert dest is not None
    dead = 2**22 + 7  # above the default pid_max, so no live process has it
    dest.rename(dest.with_name(f".r1.old-{dead}"))  # killed between the two renames
    (dest.parent / f".r1.tmp-{dead}").mkdir()  # killed while copying
    publish(tmp_path, run)
    assert [p.name for p in dest.parent.iterdir()] == ["r1"] and (dest / "README.md").is_file()


def test_merged_model_loads_without_peft_and_matches_base_plus_adapter(
    tmp_path: Path, tiny_model_dir: Path, tiny_adapter_dir: Path, tokenizer: Any
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = finished_run(tmp_path, "r1", tiny_adapter_dir, model_name=str(tiny_model_dir))
    evaluated(tmp_path, run, 80.0, 0.0, model_name=str(tiny_model_dir))
    result = publish(tmp_path, run, merged=True)
    dest = result.path
    assert dest is not None and result.merged
    assert "adapter_config.json" not in result.files and "config.json" in result.files
    assert "model.safetensors" in result.files and "tokenizer.json" in result.files
    meta = front_matter((dest / "README.md").read_text())
    assert meta["library_name"] == "transformers" and "base_model" not in meta  # a private folder has no hub id

    merged = AutoModelForCausalLM.from_pretrained(dest)
    assert not isinstance(merged, PeftModel) and not any("lora" in k for k in merged.state_dict())
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(tiny_adapter_dir))
    base_only = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Rolling sum of A1:A9 over 3"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    settings = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    with torch.no_grad():
        got = merged.generate(**ids, **settings)
        want = reference.generate(**ids, **settings)
        logits_merged = merged(**ids).logits
        logits_reference = reference(**ids).logits
    assert torch.equal(got, want)
    assert torch.allclose(logits_merged, logits_reference, atol=1e-4)
    assert not torch.allclose(logits_merged, base_only(**ids).logits, atol=1e-4)  # the adapter did change the model


def test_leaked_eval_data_refuses_publishing(tmp_path: Path, tiny_adapter_dir: Path) -> None:
    run = finished_run(tmp_path, "r1", tiny_adapter_dir)
    train_file = tmp_path / "train.jsonl"
    train_file.write_text(json.dumps({"prompt": "question 0", "completion": "x"}) + "\n")
    files = [DataFileEntry(name="train.jsonl", path=str(train_file), sha256="x")]
    manifest = RunDir(run).read_manifest()
    RunDir(run).write_manifest(manifest.model_copy(update={"data": DataLineage(files=files)}))
    evaluated(tmp_path, run, 100.0, 0.0)
    with pytest.raises(NotImprovedError, match=r"1 of 32 test examples are also training data \(allowed: 0%\)"):
        publish(tmp_path, run)
    assert publish(tmp_path, run, force=True).forced


def test_the_gate_says_what_went_wrong(tmp_path: Path, tiny_adapter_dir: Path) -> None:
    from loraops.publish import GateError

    run = finished_run(tmp_path, "r1", tiny_adapter_dir)
    fake_metrics(tmp_path / "m", "r1", {"test": 100.0}, n=1)  # `eval limit=1`
    fake_metrics(tmp_path / "m", baseline_name("default"), {"test": 0.0})
    with pytest.raises(GateError, match="the comparison failed: split 'test' was not scored the same way") as refused:
        publish(tmp_path, run)
    assert not isinstance(refused.value, NotEvaluatedError)  # it was evaluated: the two sides just differ
