"""publish proves that the staged files are the evaluated model: it reloads them and regenerates answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import CONFIGS, compare_cfg, write_jsonl

from loraops.config import EvalConfig, load_config
from loraops.errors import LoraopsError
from loraops.eval.evaluate import evaluate
from loraops.publish import publish_local
from loraops.publish import stage as stage_mod


@pytest.fixture
def evaluated_run(trained_run_copy: Path, tmp_path: Path) -> Path:
    run = trained_run_copy  # evaluation adds its scores to the run's records
    write_jsonl(
        tmp_path / "evalsets" / "test.jsonl",
        [{"prompt": f"Rolling sum of A1:A{n}", "completion": "x"} for n in range(5, 9)],
    )
    common = [f"eval_dir={tmp_path / 'evalsets'}", f"metrics_dir={tmp_path / 'm'}", "max_new_tokens=4", "batch_size=2"]
    for config in ("eval", "eval_baseline"):
        evaluate(load_config(EvalConfig, CONFIGS, config, [f"model={run}", *common]))
    return run


def _publish(tmp_path: Path, run: Path, **kwargs: Any) -> Any:
    cfg = compare_cfg(tmp_path, verify_samples=4)
    # A random tiny model does not beat its base: --force, so the check itself is what is tested.
    return publish_local(str(run), compare_cfg=cfg, force=True, **kwargs)


@pytest.mark.parametrize("merged", [False, True], ids=["adapter", "merged"])
def test_published_files_reproduce_the_evaluated_answers(tmp_path: Path, evaluated_run: Path, merged: bool) -> None:
    result = _publish(tmp_path, evaluated_run, merged=merged)
    card = (result.path / "README.md").read_text()
    assert "Published files checked: the " in card and "regenerated 4 test examples greedily" in card


def test_weights_altered_after_staging_are_refused(
    tmp_path: Path, evaluated_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file, save_file

    real_verify = stage_mod.verify_published

    def tamper_then_verify(folder: Path, *args: Any) -> str:
        weights = folder / "adapter_model.safetensors"
        tensors = {k: v * 50 + 0.5 for k, v in load_file(weights).items()}
        save_file(tensors, weights)  # what a disk error, or a stale copy, would leave
        return real_verify(folder, *args)

    monkeypatch.setattr(stage_mod, "verify_published", tamper_then_verify)
    with pytest.raises(LoraopsError, match="do not reproduce the evaluated model: .*test.jsonl:1 was answered"):
        _publish(tmp_path, evaluated_run)
    models = tmp_path / "artifacts" / "models"
    assert not models.exists() or not any(models.iterdir())  # nothing published, nothing half-written
    assert not (tmp_path / "artifacts" / "reference.json").exists()
