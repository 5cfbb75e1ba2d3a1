"""`loraops chat`: talk to a run, a published model or a base model in the terminal, replies streamed.

The conversation is rendered with the model's chat template exactly as training renders it, the whole
history every turn. Lines starting with / are commands; EOF (Ctrl-D) and Ctrl-C at the prompt end the chat.
"""

from __future__ import annotations

import io
import sys
from contextlib import closing
from dataclasses import dataclass, field
from typing import TextIO

from loraops.data.formats import Message
from loraops.errors import LoraopsError
from loraops.eval.generate import GenerationSettings
from loraops.inference import ChatModel, PromptTooLong
from loraops.llamacpp_chat import load_model

PROMPT = ">>> "
COMMANDS = "/reset clears the conversation, /system TEXT sets the system prompt (/system alone removes it), /exit quits"


@dataclass
class Conversation:
    system: str | None = None
    turns: list[Message] = field(default_factory=list)

    def messages(self) -> list[Message]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.turns


def check_settings(temperature: float, top_p: float, max_new_tokens: int) -> None:
    if temperature < 0:
        raise LoraopsError(f"--temperature {temperature}: must be 0 (greedy) or more")
    if not 0 < top_p <= 1:
        raise LoraopsError(f"--top-p {top_p}: must be above 0 and at most 1")
    if max_new_tokens < 1:
        raise LoraopsError(f"--max-new-tokens {max_new_tokens}: must be at least 1")


def chat(
    spec: str,
    settings: GenerationSettings,
    system: str | None = None,
    seed: int | None = None,
    engine: str = "transformers",
    gguf: str | None = None,
) -> Conversation:
    """Load the model named by `spec` and chat on stdin/stdout; `system` overrides the trained system prompt."""
    from transformers import set_seed

    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(errors="replace")  # bytes that are not UTF-8 are shown as such, never a crash
    model = load_model(spec, engine, gguf)
    if seed is not None:
        set_seed(seed)
    conversation = Conversation(model.system_prompt if system is None else system or None)
    return run_chat(model, settings, conversation, sys.stdin, sys.stdout)


def run_chat(
    model: ChatModel, settings: GenerationSettings, conversation: Conversation, in_stream: TextIO, out_stream: TextIO
) -> Conversation:
    """The chat loop, on any pair of text streams; returns the conversation as it stood at the end."""
    out_stream.write(f"chatting with {model.name}{_system_note(conversation)}\n{COMMANDS}\n")
    while True:
        try:
            line = _read(in_stream, out_stream)
        except (EOFError, KeyboardInterrupt):
            out_stream.write("\n")
            return conversation
        text = line.strip()
        if text in ("/exit", "/quit", "/bye"):
            return conversation
        if text.startswith("/"):
            out_stream.write(_command(text, conversation) + "\n")
        elif text:
            _answer(model, settings, conversation, text, out_stream)


def _read(in_stream: TextIO, out_stream: TextIO) -> str:
    if in_stream is sys.stdin and out_stream is sys.stdout and sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())

        return input(PROMPT)
    out_stream.write(PROMPT)
    out_stream.flush()
    line = in_stream.readline()
    if not line:
        raise EOFError
    return line


def _command(text: str, conversation: Conversation) -> str:
    name, _, argument = text.partition(" ")
    if name == "/reset":
        conversation.turns.clear()
        return "(conversation cleared)"
    if name == "/system":
        conversation.system = argument.strip() or None
        return f"(system prompt: {conversation.system})" if conversation.system else "(no system prompt)"
    return f"unknown command {name}; {COMMANDS}"


def _answer(
    model: ChatModel, settings: GenerationSettings, conversation: Conversation, text: str, output: TextIO
) -> None:
    """Stream the reply to `text`; Ctrl-C stops it, and the turn is dropped from the conversation."""
    conversation.turns.append({"role": "user", "content": text})
    try:
        reply = model.reply(conversation.messages(), settings)
    except PromptTooLong as exc:
        conversation.turns.pop()
        output.write(f"({exc} /reset starts the conversation over.)\n\n")
        return
    try:
        with closing(reply.stream()) as pieces:
            for piece in pieces:
                output.write(piece)
                output.flush()
    except KeyboardInterrupt:
        conversation.turns.pop()
        output.write(" [interrupted]\n\n")
        return
    output.write("\n\n")
    conversation.turns.append({"role": "assistant", "content": reply.text.strip()})


def _system_note(conversation: Conversation) -> str:
    return f" (system prompt: {conversation.system})" if conversation.system else ""
