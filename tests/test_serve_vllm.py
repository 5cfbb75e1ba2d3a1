"""`loraops serve --engine vllm`: the `vllm serve` command built for one or several runs (vLLM itself needs a
GPU, so it is tested by the command it builds and the files that command points at), and what is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from loraops.cli import main
from loraops.errors import ConfigError
from loraops.export.vllm import max_lora_rank
from loraops.models import resolve_model_path
from loraops.runs import RunDir
from loraops.serve import vllm
from loraops.serve.vllm import VllmOptions

SYSTEM = "You answer questions about Tabula formulas."


@pytest.fixture
def runs(tmp_path: Path, trained_run: Path) -> list[Path]:
    """Two runs on the tiny base, exported for vLLM, both trained with one system prompt."""
    copies = []
    for name in ("alpha", "beta"):
        copy = tmp_path / "runs" / name
        shutil.copytree(trained_run, copy, symlinks=True)
        run = RunDir(copy)
        run.write_config({**run.read_config(), "system_prompt": SYSTEM})
        assert main(["export", str(copy), "--format", "vllm", "--artifacts-dir", str(tmp_path / "artifacts")]) == 0
        copies.append(copy)
    return copies


def _flag(argv: list[str], name: str) -> list[str]:
    """The values after `name`, up to the next flag."""
    at = argv.index(name) + 1
    values = []
    while at < len(argv) and not argv[at].startswith("--"):
        values.append(argv[at])
        at += 1
    return values


def test_several_runs_are_lora_modules_on_their_one_base(tmp_path: Path, runs: list[Path]) -> None:
    options = VllmOptions(port=8011, max_new_tokens=128, max_batch=32, cors_origins=("http://localhost:3000",))
    server = vllm.build([str(r) for r in runs], options, str(tmp_path / "artifacts"))
    argv = server.argv
    base = RunDir(runs[0]).base_model()
    assert argv[1:5] == ["-m", "vllm.entrypoints.cli.main", "serve", resolve_model_path(base)]
    exports = [tmp_path / "artifacts" / "exports" / name / "vllm" / "adapter" for name in ("alpha", "beta")]
    assert _flag(argv, "--lora-modules") == [f"alpha={exports[0]}", f"beta={exports[1]}"]
    assert "--enable-lora" in argv and _flag(argv, "--max-loras") == ["2"]
    rank = json.loads((exports[0] / "adapter_config.json").read_text())["r"]
    assert _flag(argv, "--max-lora-rank") == [str(max_lora_rank(rank))]
    assert _flag(argv, "--served-model-name") == [base] and server.model_ids == [base, "alpha", "beta"]
    assert _flag(argv, "--host") == ["127.0.0.1"] and _flag(argv, "--port") == ["8011"]
    assert json.loads(_flag(argv, "--override-generation-config")[0]) == {"max_new_tokens": 128}
    assert _flag(argv, "--max-num-seqs") == ["32"]
    assert json.loads(_flag(argv, "--allowed-origins")[0]) == ["http://localhost:3000"]
    assert "--tensor-parallel-size" not in argv and "--api-key" not in argv


def test_the_files_the_command_names_load_as_vllm_loads_them(tmp_path: Path, runs: list[Path]) -> None:
    """The adapters load with PEFT on the base, the tokenizer folder loads, and the chat template vLLM is given
    renders the system prompt the runs trained with when a conversation has none."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    server = vllm.build([str(r) for r in runs], VllmOptions(), str(tmp_path / "artifacts"))
    for module in _flag(server.argv, "--lora-modules"):
        name, path = module.split("=", 1)
        base = AutoModelForCausalLM.from_pretrained(server.argv[4])
        assert PeftModel.from_pretrained(base, path, adapter_name=name).peft_config[name].r > 0
    tokenizer = AutoTokenizer.from_pretrained(_flag(server.argv, "--tokenizer")[0])
    assert server.chat_template is not None and server.template_path == Path(_flag(server.argv, "--chat-template")[0])
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], chat_template=server.chat_template, tokenize=False
    )
    assert SYSTEM in rendered and rendered.index(SYSTEM) < rendered.index("hi")


def test_become_vllm_with_the_key_in_its_environment_only(
    tmp_path: Path, runs: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    execs: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(vllm.os, "execve", lambda path, argv, env: execs.append((path, argv, env)))
    server = vllm.build(
        [str(runs[0])],
        VllmOptions(tensor_parallel=2, extra="--gpu-memory-utilization 0.8"),
        str(tmp_path / "artifacts"),
    )
    key = "sk-" + "vllm-test-key-0123456789"
    vllm.run(server, key)
    ((path, argv, env),) = execs
    assert path == argv[0] and env["VLLM_API_KEY"] == key and key not in " ".join(argv)
    assert _flag(argv, "--tensor-parallel-size") == ["2"] and argv[-2:] == ["--gpu-memory-utilization", "0.8"]
    assert key not in capsys.readouterr().out
    assert server.template_path is not None and SYSTEM in server.template_path.read_text()


def test_what_one_vllm_server_cannot_hold_is_refused(tmp_path: Path, runs: list[Path], trained_run: Path) -> None:
    artifacts = str(tmp_path / "artifacts")
    other = RunDir(runs[1])
    other.write_config({**other.read_config(), "system_prompt": "Something else."})
    with pytest.raises(ConfigError, match="different system prompts"):
        vllm.build([str(r) for r in runs], VllmOptions(), artifacts)
    with pytest.raises(ConfigError, match=r"no vLLM export .* `loraops export .* --format vllm` first"):
        vllm.build([str(trained_run)], VllmOptions(), artifacts)
    other.write_config({**other.read_config(), "model_name": "HuggingFaceTB/SmolLM2-360M-Instruct"})
    with pytest.raises(ConfigError, match="one base model"):
        vllm.build([str(r) for r in runs], VllmOptions(), artifacts)
    with pytest.raises(ConfigError, match="--api-key is set by loraops serve"):
        vllm.build([str(runs[0])], VllmOptions(extra="--api-key abc"), artifacts)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--engine", "vllm"], "vLLM is not installed"),
        (["--engine", "vllm", "--max-queue", "3"], "vLLM's server has neither"),
        (["--engine", "vllm", "--gguf", "merged"], "--engine llamacpp"),
        (["--tensor-parallel-size", "2"], "need --engine vllm"),
        (["--vllm-args=--enforce-eager"], "need --engine vllm"),
        (["run-a", "run-b"], "several runs are served with --engine vllm"),
    ],
)
def test_the_command_line_refuses_up_front(args: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", *args]) == 2
    assert words in capsys.readouterr().err


def test_without_a_gpu_vllm_is_refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        vllm.importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a)
    )
    assert main(["serve", "--engine", "vllm"]) == 2
    assert "needs an NVIDIA GPU" in capsys.readouterr().err
