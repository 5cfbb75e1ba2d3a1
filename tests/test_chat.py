"""`loraops chat`: what RUN names, the chat loop on scripted input (history, commands, streaming), the CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import REPO, make_run

from loraops.chat import Conversation, run_chat
from loraops.cli import main
from loraops.data.tokenize import tokenize_prompt
from loraops.errors import LoraopsError
from loraops.eval.generate import GenerationSettings
from loraops.eval.targets import resolve_model
from loraops.inference import ChatModel

SETTINGS = GenerationSettings.sampling(12)  # greedy, short
# The tiny random model's greedy reply is one repeated token; sampled, it says words, so pieces stream.
SAMPLED = GenerationSettings.sampling(12, temperature=1.0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_adapter_dir: Path) -> Path:
    return make_run(
        tmp_path_factory.mktemp("runs"),
        "2026-01-02_03-04-05",
        model_name=str(tiny_model_dir),
        adapter_dir=tiny_adapter_dir,
        config={"system_prompt": "Answer in one word."},
    )


@pytest.fixture(scope="module")
def chat_model(run_dir: Path) -> ChatModel:
    return ChatModel.load(str(run_dir))


class Recording(io.StringIO):
    """An output stream that keeps each write apart, to see the reply arrive in pieces."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def _spy_replies(model: ChatModel, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every Reply the chat asks for, with the messages it was asked for."""
    replies: list[Any] = []
    original = model.reply

    def reply(messages: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        made = original(messages, *args, **kwargs)
        replies.append((json.loads(json.dumps(messages)), made))
        return made

    monkeypatch.setattr(model, "reply", reply)
    return replies


# --- what RUN names -------------------------------------------------------------------------------


def test_run_folder_loads_its_adapter_name_and_system_prompt(chat_model: ChatModel, run_dir: Path) -> None:
    assert chat_model.name == run_dir.name
    assert chat_model.system_prompt == "Answer in one word."
    assert hasattr(chat_model.model, "peft_config") is False  # merged for generation, as eval does


def test_resolve_model_names(run_dir: Path, tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path) -> None:
    run = resolve_model(str(run_dir))
    assert (run.name, run.adapter_dir, run.base_model) == (run_dir.name, run_dir / "model", str(tiny_model_dir))
    folder = resolve_model(str(tiny_model_dir))  # a plain model folder, e.g. a published merged model
    assert (folder.name, folder.adapter_dir, folder.base_model) == (tiny_model_dir.name, None, str(tiny_model_dir))
    published = tmp_path / "artifacts" / "models" / "my-run"  # a published adapter: the adapter files at the top
    published.parent.mkdir(parents=True)
    import shutil

    shutil.copytree(tiny_adapter_dir, published)
    assert resolve_model(str(published)).name == "my-run"
    assert resolve_model("default").base_model == "default"
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct").name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(LoraopsError, match=r"outputs/runs/latest: no run.*`default`"):
        resolve_model(str(tmp_path / "outputs/runs/latest"))


# --- the loop ---------------------------------------------------------------------------------------


def test_history_commands_and_streaming(chat_model: ChatModel, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import set_seed

    replies = _spy_replies(chat_model, monkeypatch)
    script = "/system Be terse.\nhello there\nand a second question\n/reset\nafter the reset\n/exit\nnever read\n"
    out = Recording()
    set_seed(0)
    conversation = run_chat(chat_model, SAMPLED, Conversation(chat_model.system_prompt), io.StringIO(script), out)

    assert [len(messages) for messages, _ in replies] == [2, 4, 2]
    first, second, third = (messages for messages, _ in replies)
    assert first == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello there"}]
    answer = replies[0][1].text.strip()
    assert answer, "the tiny model should say something in 12 tokens"
    assert second[:3] == [*first, {"role": "assistant", "content": answer}]
    assert third == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "after the reset"}]
    # Turn 2's prompt is the whole history, tokenized exactly as training tokenizes it.
    prompt2 = replies[1][1].prompt_ids
    assert prompt2 == tokenize_prompt(chat_model.tokenizer, second)
    assert "hello there" in chat_model.tokenizer.decode(prompt2) and answer in chat_model.tokenizer.decode(prompt2)
    assert conversation.turns[0] == {"role": "user", "content": "after the reset"}  # /exit stopped before "never"

    text = out.getvalue()
    assert "(system prompt: Be terse.)" in text and "(conversation cleared)" in text
    # Streamed: the first reply reached the output in several writes, which together are the whole reply.
    start = out.writes.index(">>> ", out.writes.index(">>> ") + 1) + 1  # after the prompt for "hello there"
    pieces = out.writes[start : out.writes.index("\n\n", start)]
    assert len(pieces) > 1 and "".join(pieces) == replies[0][1].text


def test_greedy_reply_matches_a_second_one(chat_model: ChatModel) -> None:
    messages = [{"role": "user", "content": "same prompt"}]
    first, second = chat_model.reply(messages, SETTINGS), chat_model.reply(messages, SETTINGS)
    assert first.complete() == second.complete()
    assert first.finish_reason in ("stop", "length") and 0 < first.completion_tokens <= 12


def test_eof_ctrl_c_and_unknown_command_end_cleanly(chat_model: ChatModel) -> None:
    out = io.StringIO()
    conversation = run_chat(chat_model, SETTINGS, Conversation(), io.StringIO("/nope\n"), out)  # then EOF
    assert conversation.turns == [] and "unknown command /nope" in out.getvalue()

    class CtrlC(io.StringIO):
        def readline(self, *args: Any) -> str:
            raise KeyboardInterrupt

    assert run_chat(chat_model, SETTINGS, Conversation(), CtrlC(), io.StringIO()).turns == []


def test_ctrl_c_during_a_reply_drops_the_turn(chat_model: ChatModel) -> None:
    class InterruptingOutput(io.StringIO):
        interrupted = False

        def write(self, text: str) -> int:
            if self.getvalue().count(">>> ") == 1 and text.strip() and not self.interrupted:
                self.interrupted = True
                raise KeyboardInterrupt  # Ctrl-C as the first piece of the reply arrives
            return super().write(text)

    out = InterruptingOutput()
    conversation = run_chat(chat_model, SETTINGS, Conversation(), io.StringIO("hello\n/exit\n"), out)
    assert conversation.turns == [] and "[interrupted]" in out.getvalue()
    assert chat_model.reply([{"role": "user", "content": "x"}], SETTINGS).complete()  # the model is free again


def test_a_conversation_outgrowing_the_context_is_said_so_and_goes_on(chat_model: ChatModel) -> None:
    out = io.StringIO()
    # The tiny model's context is 512 tokens; the second turn alone is well over that.
    script = io.StringIO("hi\n" + "many words " * 400 + "\nhello again\n")
    conversation = run_chat(chat_model, SETTINGS, Conversation(), script, out)
    assert "This model's maximum context length is 512 tokens" in out.getvalue() and "/reset" in out.getvalue()
    assert [t["content"] for t in conversation.turns if t["role"] == "user"] == ["hi", "hello again"]


# --- the command ------------------------------------------------------------------------------------


def test_cli_chat_on_piped_input(tiny_model_dir: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loraops",
            "chat",
            str(tiny_model_dir),
            "--max-new-tokens",
            "5",
            "--temperature",
            "0.7",
            "--seed",
            "1",
        ],
        input=b"hi\n\xff\xfe not UTF-8\n",  # a terminal in another encoding, or a binary file piped in
        capture_output=True,
        cwd=REPO,
        timeout=300,
    )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, err
    assert f"chatting with {tiny_model_dir.name}" in out
    assert out.count(">>> ") == 3 and "Traceback" not in err


def test_cli_chat_bad_input_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", str(tmp_path / "outputs/runs/latest")]) == 2
    assert "loraops: error:" in capsys.readouterr().err
    assert main(["chat", "default", "--temperature", "-1"]) == 2
    assert "--temperature -1.0: must be 0 (greedy) or more" in capsys.readouterr().err
