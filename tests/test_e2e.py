"""End to end on the real embedded default model: `loraops train` for a few steps."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


@pytest.mark.slow
def test_train_default_model_few_steps(tmp_path: Path, default_model_dir: Path) -> None:
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "loraops", "train", f"output_dir={runs}", "max_steps=3", "batch_size=4",
               "logging_steps=1"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "running in fp32 on CPU" in done.stderr
    assert "step 3/3" in done.stderr  # progress lines with loss, lr and grad norm
    run = (runs / "latest").resolve()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_steps"] == 3 and metrics["data"]["examples"] > 200
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model_name"] == "default" and Path(manifest["resolved_model"]) == default_model_dir
    adapter = json.loads((run / "model" / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and sorted(adapter["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    shutil.rmtree(runs)
