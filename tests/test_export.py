"""loraops export: GGUF for llama.cpp and Ollama, a folder for vLLM; the GGUF files proven with llama.cpp itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from support import CONFIGS, write_jsonl

from loraops.cli import main
from loraops.config import EvalConfig, load_config
from loraops.eval.evaluate import evaluate
from loraops.export import ollama, vllm
from loraops.export.agreement import common_prefix_share


@pytest.fixture
def evaluated_run(trained_run_copy: Path, tmp_path: Path) -> Path:
    write_jsonl(
        tmp_path / "evalsets" / "test.jsonl",
        [{"prompt": f"Rolling sum of A1:A{n}", "completion": "x"} for n in range(5, 11)],
    )
    common = [f"eval_dir={tmp_path / 'evalsets'}", f"metrics_dir={tmp_path / 'artifacts' / 'metrics'}"]
    evaluate(load_config(EvalConfig, CONFIGS, "eval", [f"model={trained_run_copy}", *common, "max_new_tokens=6"]))
    return trained_run_copy


def _export(tmp_path: Path, run: Path, *args: str) -> int:
    return main(["export", str(run), "--artifacts-dir", str(tmp_path / "artifacts"), *args])


def test_the_gguf_files_answer_like_the_evaluated_model(
    tmp_path: Path, evaluated_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _export(tmp_path, evaluated_run, "--merged", "--quantize", "q8_0") == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    folder = tmp_path / "artifacts" / "exports" / evaluated_run.name / "gguf"
    record = json.loads((folder / "export.json").read_text())
    name = evaluated_run.name
    assert record["files"] == {
        "base": f"{Path(record['files']['base']).name}",
        "lora": f"{name}-LoRA-F16.gguf",
        "merged": f"{name}-F16.gguf",
        "quantized": f"{name}-Q8_0.gguf",
        "modelfile": "Modelfile",
        "modelfile_merged": "Modelfile.merged",
    }
    assert record["files"]["base"].endswith("-F16.gguf")  # a folder base is converted; a GGUF base is reused
    for file in record["files"].values():
        assert (folder / file).is_file()
    assert [a["artifact"] for a in record["agreement"]] == ["base + LoRA", "merged F16", "merged Q8_0"]
    # A random tiny model's logits are nearly flat, so only the unquantised files are held to agreement here.
    assert all(a["examples"] == 6 and a["split"] == "test" for a in record["agreement"])
    assert record["good"] and all(a["exact"] >= 0.9 for a in record["agreement"][:2])
    assert json.loads((evaluated_run / "exports" / "gguf.json").read_text()) == record
    modelfile = (folder / "Modelfile").read_text()  # the adapter on its base, as Ollama's ADAPTER runs it
    assert f"FROM ./{record['files']['base']}\nADAPTER ./{name}-LoRA-F16.gguf\n" in modelfile
    assert 'TEMPLATE """{{- range .Messages }}<|im_start|>' in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    merged = (folder / "Modelfile.merged").read_text()
    assert f"FROM ./{name}-Q8_0.gguf" in merged and "ADAPTER" not in merged  # the merged model needs none
    assert f"ollama create {name.lower()}-merged -f Modelfile.merged" in out
    assert "identical answers" in out
    assert f"llama-cli -m {folder}/{record['files']['base']} --lora {folder}/{name}-LoRA-F16.gguf -cnv" in out
    card = (folder / "README.md").read_text()
    assert "| base + LoRA |" in card and "ollama create" in card


def test_answers_unlike_the_evaluated_ones_keep_nothing(
    tmp_path: Path, evaluated_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    predictions = tmp_path / "artifacts" / "metrics" / evaluated_run.name / "test.predictions.jsonl"
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    predictions.write_text("".join(json.dumps(r | {"prediction": r["prediction"] + " nope"}) + "\n" for r in rows))
    assert _export(tmp_path, evaluated_run, "--limit", "3") == 1
    assert "answered unlike the evaluated model" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "artifacts").iterdir()] == ["metrics"]  # no export, no leftovers
    assert not (evaluated_run / "exports").exists()

    assert _export(tmp_path, evaluated_run, "--limit", "3", "--force") == 0
    record = json.loads((tmp_path / "artifacts" / "exports" / evaluated_run.name / "gguf" / "export.json").read_text())
    assert record["forced"] and not record["good"] and record["agreement"][0]["exact"] == 0
    assert record["agreement"][0]["first_difference"]["line"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quantize", "q4_k_m"], "--quantize applies to the merged model: add --merged"),
        (["--merged", "--quantize", "q9_z"], "--quantize q9_z: this llama.cpp offers"),
        (["--format", "vllm", "--merged"], "--merged and --quantize apply to --format gguf"),
        (["--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_requests_that_cannot_be_met_are_refused_before_any_work(
    tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert _export(tmp_path, trained_run, *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "artifacts" / "exports").exists()


def test_a_folder_not_ours_is_never_replaced(
    tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    (mine / "notes.txt").parent.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert _export(tmp_path, trained_run, "--format", "vllm", "--out", str(mine)) == 2
    assert "is not an export loraops wrote" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep" and len(list(mine.iterdir())) == 1


def test_splits_never_evaluated_are_answered_by_the_peft_model_first(
    tmp_path: Path, trained_run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `make train && make export`: no evaluation; eval.yaml's splits (data/eval here) are answered first.
    assert _export(tmp_path, trained_run_copy, "--split", "test", "--split", "dev", "--limit", "2") == 0
    record = json.loads((trained_run_copy / "exports" / "gguf.json").read_text())
    assert record["splits"] == ["test", "dev"]
    assert [(a["split"], a["examples"]) for a in record["agreement"]] == [("test", 2), ("dev", 2)]
    assert "test: answers generated by the PEFT model at export (never evaluated)" in record["notes"]
    assert "base + LoRA on dev (2 prompts)" in capsys.readouterr().out
    assert not (tmp_path / "artifacts" / "metrics").exists()  # nothing recorded as if eval had run


def test_an_adapter_that_is_not_the_trained_one_fails_the_threshold(
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_adapter_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The proof must catch a conversion that changed the weights: the GGUF LoRA is made from the adapter with
    its B matrices zeroed (what a converter dropping a scale or a tensor gives), and must not be kept."""
    from safetensors.torch import load_file, save_file
    from support import finished_run

    from loraops.export import gguf as gguf_mod

    run = finished_run(tmp_path, "r1", tiny_adapter_dir, model_name=str(tiny_model_dir))  # random, non-zero LoRA
    real = gguf_mod.run_converter

    def convert_a_zeroed_copy(script: str, args: list[str], what: str) -> None:
        if script == "convert_lora_to_gguf.py":
            zeroed = tmp_path / "zeroed"
            shutil.copytree(args[-1], zeroed)
            tensors = load_file(zeroed / "adapter_model.safetensors")
            save_file(
                {k: v * 0 if "lora_B" in k else v for k, v in tensors.items()}, zeroed / "adapter_model.safetensors"
            )
            args = [*args[:-1], str(zeroed)]
        real(script, args, what)

    monkeypatch.setattr(gguf_mod, "run_converter", convert_a_zeroed_copy)
    assert _export(tmp_path, run, "--limit", "4") == 1
    out = capsys.readouterr().out
    assert "base + LoRA on test (4 prompts): 0.0% identical answers" in out
    monkeypatch.setattr(gguf_mod, "run_converter", real)
    assert _export(tmp_path, run, "--limit", "4") == 0  # the real conversion of the same adapter passes
    assert "base + LoRA on test (4 prompts): 100.0% identical answers" in capsys.readouterr().out


def test_without_llama_cpp_gguf_export_says_how_to_get_it(
    tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: (
            (_ for _ in ()).throw(importlib.metadata.PackageNotFoundError(name))
            if name == "llama-cpp-python"
            else real(name)
        ),
    )
    assert _export(tmp_path, trained_run) == 2
    assert "pip install 'loraops[gguf]'" in capsys.readouterr().err


def test_the_vllm_folder_is_the_adapter_with_its_command(
    tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _export(tmp_path, trained_run, "--format", "vllm") == 0
    out = capsys.readouterr().out
    folder = tmp_path / "artifacts" / "exports" / trained_run.name / "vllm"
    assert (folder / "adapter" / "adapter_config.json").is_file()
    assert (folder / "adapter" / "adapter_model.safetensors").read_bytes() == (
        trained_run / "model" / "adapter_model.safetensors"
    ).read_bytes()
    rank = json.loads((trained_run / "model" / "adapter_config.json").read_text())["r"]
    assert f"--enable-lora --lora-modules {trained_run.name}=" in out
    assert f"--max-lora-rank {vllm.max_lora_rank(rank)}" in out
    record = json.loads((folder / "export.json").read_text())
    assert record["engine"] == {"name": "vllm", "version": None} and "vLLM was not run here" in record["notes"][0]


def test_what_vllm_refuses_is_named() -> None:
    adapter: dict[str, Any] = {"r": 8, "target_modules": ["q_proj", "v_proj"], "bias": "none"}
    assert vllm.check(adapter, ["LlamaForCausalLM"]) == []
    bad = adapter | {"use_dora": True, "modules_to_save": ["lm_head"], "bias": "all", "r": 600}
    bad["target_modules"] = ["q_proj", "fc_in"]
    problems = " ".join(vllm.check(bad, ["LlamaForCausalLM"]))
    for part in ("DoRA", "modules_to_save=['lm_head']", "bias=all", "rank 600", "['fc_in']"):
        assert part in problems
    assert "fc_in" not in " ".join(vllm.check(adapter | {"target_modules": ["fc_in"]}, ["GPTJForCausalLM"]))
    assert [vllm.max_lora_rank(r) for r in (1, 4, 16, 17, 300, 512)] == [1, 8, 16, 32, 320, 512]


def test_ollama_templates_are_recognised_by_rendering(tokenizer: Any) -> None:
    smol = ollama.translate(tokenizer)
    assert smol.family is not None and smol.family.name == "chatml"
    assert smol.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    llama3 = (
        "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + "
        "m['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    )
    other = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    try:
        tokenizer.chat_template = llama3
        found = ollama.translate(tokenizer)
        assert found.family is not None and found.family.name == "llama3-instruct" and found.default_system is None
        tokenizer.chat_template = other
        assert ollama.translate(tokenizer).family is None
    finally:
        tokenizer.chat_template = smol_template(tokenizer)


def smol_template(tokenizer: Any) -> str:
    from transformers import AutoTokenizer

    return str(AutoTokenizer.from_pretrained(tokenizer.name_or_path).chat_template)


def test_a_modelfile_system_prompt_that_cannot_be_quoted_is_refused(tokenizer: Any) -> None:
    from loraops.errors import ConfigError

    translation = ollama.translate(tokenizer)
    text = ollama.modelfile(Path("b.gguf"), Path("l.gguf"), translation, "Answer in DSL.", "Run-1")
    assert text.splitlines()[1:3] == ["FROM ./b.gguf", "ADAPTER ./l.gguf"] and 'SYSTEM """Answer in DSL."""' in text
    with pytest.raises(ConfigError, match="cannot quote"):
        ollama.modelfile(Path("b.gguf"), None, translation, 'say """hi"""', "Run-1")


def test_token_agreement_is_the_shared_prefix() -> None:
    assert common_prefix_share([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert common_prefix_share([1, 2, 3, 4], [1, 2, 9, 4]) == 0.5
    assert common_prefix_share([1, 2], [1, 2, 3, 4]) == 0.5
    assert common_prefix_share([], [5]) == 0.0


@pytest.fixture(scope="module")
def exported_project(tmp_path_factory: pytest.TempPathFactory, trained_run: Path) -> Path:
    """One evaluated and exported tiny run for the module: runs/<run>, evalsets/ and artifacts/ (metrics, exports)."""
    root = tmp_path_factory.mktemp("exported")
    run = root / "runs" / trained_run.name
    shutil.copytree(trained_run, run, symlinks=True)
    write_jsonl(
        root / "evalsets" / "test.jsonl",
        [{"prompt": f"Rolling sum of A1:A{n}", "completion": "x"} for n in range(5, 8)],
    )
    common = [f"eval_dir={root / 'evalsets'}", f"metrics_dir={root / 'artifacts' / 'metrics'}", "max_new_tokens=6"]
    evaluate(load_config(EvalConfig, CONFIGS, "eval", [f"model={run}", *common]))
    assert _export(root, run, "--merged", "--quantize", "q8_0") == 0
    return root


@pytest.fixture
def exported_run(tmp_path: Path, exported_project: Path) -> Path:
    """A copy of the module's exported run, under tmp_path, free to change."""
    shutil.copytree(exported_project, tmp_path, symlinks=True, dirs_exist_ok=True)
    return tmp_path / "runs" / next((exported_project / "runs").iterdir()).name


def _publish(tmp_path: Path, run: Path, *args: str) -> int:
    # A random tiny model does not beat its base: --force, so what is carried is what is tested.
    return main(["publish", str(run), "--artifacts-dir", str(tmp_path / "artifacts"), "--force", *args])


def test_publish_carries_the_gguf_files_export_proved(
    tmp_path: Path, exported_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _publish(tmp_path, exported_run, "--format", "gguf") == 0, capsys.readouterr().err
    published = tmp_path / "artifacts" / "models" / exported_run.name
    name = exported_run.name
    exported = tmp_path / "artifacts" / "exports" / name / "gguf"
    for file in (f"{name}-LoRA-F16.gguf", f"{name}-F16.gguf", f"{name}-Q8_0.gguf", "Modelfile.merged"):
        assert (published / file).read_bytes() == (exported / file).read_bytes()
    assert not list(published.glob("*Q4_1*")) and not (published / "Modelfile").exists()  # the base's, not ours
    assert (published / "adapter_model.safetensors").is_file()
    card = (published / "README.md").read_text()
    assert "- gguf\n" in card.split("---")[1] and "## GGUF: llama.cpp and Ollama" in card
    assert "| base + LoRA | `" in card and f"`{name}-LoRA-F16.gguf` | " in card
    assert f"llama-server -m {name}-Q8_0.gguf" in card


def test_publish_refuses_gguf_files_that_are_not_the_ones_export_ran(
    tmp_path: Path, exported_run: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lora = tmp_path / "artifacts" / "exports" / exported_run.name / "gguf" / f"{exported_run.name}-LoRA-F16.gguf"
    lora.write_bytes(lora.read_bytes()[:-1] + b"\x00")
    assert _publish(tmp_path, exported_run, "--format", "gguf") == 2
    assert "is not the file export tested" in capsys.readouterr().err
    assert not (tmp_path / "artifacts" / "models" / exported_run.name).exists()

    other = tmp_path / "other"
    assert main(["publish", str(trained_run), "--artifacts-dir", str(other), "--force", "--format", "gguf"]) == 2
    assert f"run {trained_run.name} has no GGUF export" in capsys.readouterr().err


def test_publish_hf_uploads_the_gguf_files(
    hub: Any, tmp_path: Path, exported_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from support import HUB_REPO

    args = ["publish-hf", str(exported_run), "--repo", HUB_REPO, "--format", "gguf", "--force"]
    assert main([*args, "--artifacts-dir", str(tmp_path / "artifacts")]) == 0, capsys.readouterr().err
    name = exported_run.name
    exported = tmp_path / "artifacts" / "exports" / name / "gguf"
    assert hub.file(HUB_REPO, f"{name}-Q8_0.gguf") == (exported / f"{name}-Q8_0.gguf").read_bytes()
    assert b"- gguf" in hub.file(HUB_REPO, "README.md")


def test_chat_and_serve_run_the_exported_files_with_llama_cpp(tmp_path: Path, exported_run: Path) -> None:
    import openai
    from support import serving

    from loraops.eval.generate import GenerationSettings
    from loraops.llamacpp_chat import load
    from loraops.serve.app import create_app

    record = json.loads((tmp_path / "artifacts" / "exports" / exported_run.name / "gguf" / "export.json").read_text())
    lora = record["agreement"][0]
    assert lora["artifact"] == "base + LoRA" and lora["exact"] == 1.0  # llama.cpp gave the evaluated answers
    predictions = tmp_path / "artifacts" / "metrics" / exported_run.name / "test.predictions.jsonl"
    first = json.loads(predictions.read_text().splitlines()[0])

    model = load(str(exported_run), artifacts_dir=str(tmp_path / "artifacts"))
    assert model.name == f"{exported_run.name}-gguf-lora" and model.context_length == 512
    reply = model.reply(first["messages"], GenerationSettings(6))
    # The same answer (eval strips what it records), streamed.
    assert reply.complete().strip() == first["prediction"] and reply.completion_tokens == 6

    with serving(create_app(model, max_new_tokens=6)) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)
        answer = client.chat.completions.create(model=model.name, messages=first["messages"], temperature=0)
        assert (answer.choices[0].message.content or "").strip() == first["prediction"]
        pieces = client.chat.completions.create(
            model=model.name, messages=first["messages"], temperature=0, stream=True
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
        assert streamed.strip() == first["prediction"] and streamed == answer.choices[0].message.content
    merged = load(str(exported_run), "quantized", artifacts_dir=str(tmp_path / "artifacts"))
    assert merged.name.endswith("-gguf-quantized") and merged.reply(first["messages"], GenerationSettings(3)).complete()


def test_chat_without_an_export_says_how_to_make_one(
    tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["chat", str(trained_run), "--engine", "llamacpp"]) == 2
    assert f"run `loraops export {trained_run}` first" in capsys.readouterr().err
    assert main(["chat", str(trained_run), "--gguf", "merged"]) == 2
    assert "--gguf picks a file of the GGUF export: it needs --engine llamacpp" in capsys.readouterr().err
