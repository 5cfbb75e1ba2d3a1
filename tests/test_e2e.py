"""End to end on the real embedded default model, through the command line as a user runs it:
train one epoch on the sample data, evaluate, evaluate the base model, compare."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO


def loraops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loraops", *args], cwd=REPO, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_default_model_learns_the_sample_dsl_and_stops(tmp_path: Path, default_model_dir: Path) -> None:
    runs, metrics = tmp_path / "runs", tmp_path / "metrics"
    done = loraops("train", f"output_dir={runs}", "epochs=1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "running in fp32 on CPU" in done.stderr
    assert "loss" in done.stderr and "grad_norm" in done.stderr  # progress lines
    run = (runs / "latest").resolve()
    train_metrics = json.loads((run / "metrics.json").read_text())
    assert train_metrics["data"]["examples"] > 200 and train_metrics["data"]["dropped_all_masked"] == 0
    # The replayed general answers are long and varied: the loss falls less than on the DSL alone.
    assert train_metrics["final_logged_loss"] < train_metrics["first_logged_loss"] / 1.5
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model_name"] == "default" and Path(manifest["resolved_model"]) == default_model_dir
    adapter = json.loads((run / "model" / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and len(adapter["target_modules"]) == 7

    # The base model cannot know the invented DSL: half the test split shows it, and both sides must be
    # scored on the same examples with the same settings, or compare refuses.
    common = [f"model={runs / 'latest'}", f"metrics_dir={metrics}", "splits=[test]", "limit=32", "max_new_tokens=32"]
    done = loraops("eval", *common)
    assert done.returncode == 0, done.stderr[-3000:]
    done = loraops("eval", "--config-name", "eval_baseline", *common)
    assert done.returncode == 0, done.stderr[-3000:]
    done = loraops(
        "compare", f"run={runs / 'latest'}", f"metrics_dir={metrics}", f"reference_file={tmp_path / 'reference.json'}"
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "verdict: IMPROVED against baseline/default" in done.stdout and "significant at alpha=0.05" in done.stdout

    tuned = json.loads((metrics / run.name / "test.json").read_text())["metrics"]
    base = json.loads((metrics / "baseline" / "default" / "test.json").read_text())["metrics"]
    assert tuned["n"] == 32
    assert tuned["stopped_at_eos_pct"] >= 95, "the fine-tuned model must end its answers with EOS"
    assert tuned["exact_match"] >= 50 and base["exact_match"] <= 10

    # llama.cpp runs the exported files on the evaluated prompts: the LoRA on the very GGUF base the default
    # model was converted from, the merged model, and its Q4_K_M quantisation.
    # --force: this one-epoch model has near-ties, and llama.cpp multiplies the Q4_1 base by activations it
    # quantises to 8 bits, so on some CPUs a tie falls the other way (14 of 16 identical on one machine, at
    # least 90% on another; the three-epoch `make train` model: 100%). The merged F16 file computes as PEFT
    # does: held to 100%.
    done = loraops(
        "export",
        str(run),
        "--artifacts-dir",
        str(tmp_path),
        "--merged",
        "--quantize",
        "q4_k_m",
        "--limit",
        "16",
        "--force",
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    record = json.loads((tmp_path / "exports" / run.name / "gguf" / "export.json").read_text())
    assert record["files"]["base"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    agreement = {a["artifact"]: a for a in record["agreement"]}
    assert agreement["merged F16"]["exact"] == 1.0
    assert agreement["base + LoRA"]["exact"] >= 0.75 and agreement["base + LoRA"]["tokens"] >= 0.85
    assert agreement["merged Q4_K_M"]["tokens"] >= 0.5
    assert record["forced"] == (not record["good"])
