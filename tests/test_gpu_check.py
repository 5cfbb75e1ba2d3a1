"""`make gpu-check` in its CPU plumbing mode, as CI runs it: every check's own code, on a tiny random model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import REPO

SCRIPT = REPO / "bench" / "gpu_check.py"


def test_the_gpu_check_runs_every_check_on_the_cpu(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--plumbing", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    statuses = {r["check"]: r["status"] for r in report["results"]}
    # What a CPU can check, passes; what needs a GPU (or a second one, or a CUDA-only package) says SKIP.
    for check in ("precision", "default training", "throughput, defaults", "throughput, packing", "eval", "serve"):
        assert statuses[check] == "OK", report
    assert statuses["packed = alone, loss per example"] == "OK" and statuses["KV cache, static vs dynamic"] == "OK"
    assert statuses["QLoRA (4-bit base)"] == statuses["DDP, 2 processes"] == statuses["memory estimate"] == "SKIP"
    assert set(statuses.values()) <= {"OK", "SKIP"} and len(statuses) == 19
    lines = done.stdout.splitlines()
    assert sum(line.startswith(("OK ", "SKIP ")) for line in lines) == 19  # one line per check
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| check | result | measured |" in table and table.count("\n| ") == 21 and "plumbing mode" in table


def test_without_a_gpu_it_says_so_and_points_at_the_plumbing_mode() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no CUDA GPU here; --plumbing" in done.stderr and "Traceback" not in done.stderr
