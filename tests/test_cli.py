"""The command line: help, list-configs, version, and `python -m loraops`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import CONFIGS, REPO

from loraops.cli import main


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["train"],
        ["check"],
        ["eval"],
        ["compare"],
        ["convert"],
        ["publish"],
        ["publish-hf"],
        ["remote"],
        ["remote", "train"],
        ["remote", "pull"],
        ["list-configs"],
        ["version"],
        ["prepare-model"],
    ],
)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: loraops" in capsys.readouterr().out


def test_train_help_documents_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for key in ("lora_target_modules", "data_source.type", "cuda_visible_devices", "warmup_ratio"):
        assert key in out


def test_list_configs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list-configs", "--config-dir", str(CONFIGS)]) == 0
    out = capsys.readouterr().out
    assert "train " in out and "train_llama3_8b" in out


def test_python_dash_m_and_version() -> None:
    done = subprocess.run([sys.executable, "-m", "loraops", "version"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0
    assert "transformers" in done.stdout and "peft" in done.stdout


def test_readme_config_references_match_the_schemas() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from config_reference import SCHEMAS, block

    readme = (REPO / "README.md").read_text()
    for name in SCHEMAS:
        assert block(name) in readme, "README config reference is stale: scripts/config_reference.py --write README.md"


def test_dotenv_is_read_without_overriding_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    (tmp_path / ".env").write_text("LORAOPS_TEST_FROM_DOTENV=from-file\nLORAOPS_TEST_SET=from-file\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LORAOPS_TEST_SET", "from-env")
    monkeypatch.delenv("LORAOPS_TEST_FROM_DOTENV", raising=False)
    assert main(["list-configs", "--config-dir", str(CONFIGS)]) == 0
    assert os.environ["LORAOPS_TEST_FROM_DOTENV"] == "from-file"
    assert os.environ["LORAOPS_TEST_SET"] == "from-env"
    os.environ.pop("LORAOPS_TEST_FROM_DOTENV")  # set by the code under test, so monkeypatch does not know it


def test_devices_reports_gpus_and_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("GPUs: ") and "\nCPU: " in out
