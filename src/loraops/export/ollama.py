"""An Ollama Modelfile for the exported GGUF files, its TEMPLATE translated from the model's chat template.

Translation is by recognition, not by parsing Jinja: the model's template renders a probe conversation, and
each of Ollama's own templates (ollama/ollama template/*.gotmpl, with their stop lists) whose rendering is
the same is the one used. A template no family matches gets no TEMPLATE line, and Ollama matches the GGUF's
own chat template against its index, or runs it itself (newer Ollama); the card says which happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraops.errors import ConfigError

Conversation = list[dict[str, str]]


@dataclass(frozen=True)
class Family:
    name: str
    go_template: str
    stops: tuple[str, ...]
    render: Callable[[Conversation, bool], str]  # what the template gives: (messages, generation prompt)


def _chatml(messages: Conversation, prompt: bool) -> str:
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + ("<|im_start|>assistant\n" if prompt else "")


def _llama3(messages: Conversation, prompt: bool) -> str:
    turns = "".join(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>" for m in messages)
    return turns + ("<|start_header_id|>assistant<|end_header_id|>\n\n" if prompt else "")


def _tagged(end: str) -> Callable[[Conversation, bool], str]:
    def render(messages: Conversation, prompt: bool) -> str:
        return "".join(f"<|{m['role']}|>\n{m['content']}{end}\n" for m in messages) + (
            "<|assistant|>\n" if prompt else ""
        )

    return render


# Verbatim from ollama/ollama template/*.gotmpl and *.json (stop lists).
FAMILIES = (
    Family(
        "chatml",
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
        ("<|im_start|>", "<|im_end|>"),
        _chatml,
    ),
    Family(
        "llama3-instruct",
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>\n"
        "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
        ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        _llama3,
    ),
    Family(
        "phi-3",
        "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n",
        ("<|end|>", "<|system|>", "<|user|>", "<|assistant|>"),
        _tagged("<|end|>"),
    ),
    Family(
        "zephyr",
        "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}</s>\n{{ end }}<|assistant|>\n",
        ("<|system|>", "</s>", "<|user|>", "<|assistant|>"),
        _tagged("</s>"),
    ),
)
_PROBE: Conversation = [
    {"role": "system", "content": "S1"},
    {"role": "user", "content": "U1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "U2"},
]


@dataclass(frozen=True)
class Translation:
    family: Family | None
    default_system: str | None  # what the template adds when a conversation has no system turn


def translate(tokenizer: Any) -> Translation:
    """Which of Ollama's templates renders like this tokenizer's chat template, and its implicit system prompt."""
    for family in FAMILIES:
        if family.render(_PROBE, True) in _renderings(tokenizer, _PROBE):
            return Translation(family, _default_system(tokenizer, family))
    return Translation(None, None)


def _default_system(tokenizer: Any, family: Family) -> str | None:
    before, after = family.render([{"role": "system", "content": "\x00"}, *_PROBE[1:]], True).split("\x00")
    for text in _renderings(tokenizer, _PROBE[1:]):
        if text != family.render(_PROBE[1:], True) and text.startswith(before) and text.endswith(after):
            return text[len(before) : len(text) - len(after)]
    return None


def _renderings(tokenizer: Any, messages: Conversation) -> list[str]:
    """The template's text, and the same without a leading BOS (Ollama adds BOS itself, as llama.cpp does)."""
    try:
        text = str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    except Exception:  # a template that cannot render the probe is simply not recognised
        return []
    bos = getattr(tokenizer, "bos_token", None)
    return [text, text[len(bos) :]] if bos and text.startswith(bos) else [text]


def modelfile(
    model: Path,
    adapter: Path | None,
    translation: Translation,
    system_prompt: str | None,
    run: str,
    name: str = "Modelfile",
) -> str:
    """The Modelfile text: paths relative to the Modelfile, which lies beside the GGUF files."""
    lines = [f"# loraops export of run {run}: `ollama create NAME -f {name}` (README.md)", f"FROM ./{model.name}"]
    if adapter is not None:
        lines.append(f"ADAPTER ./{adapter.name}")
    if translation.family is not None:
        lines.append(f'TEMPLATE """{translation.family.go_template}"""')
        lines += [f'PARAMETER stop "{stop}"' for stop in translation.family.stops]
    system = system_prompt or translation.default_system
    if system:
        if '"""' in system:
            raise ConfigError('the system prompt holds """, which an Ollama Modelfile cannot quote')
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def ollama_name(run: str) -> str:
    """Ollama model names are lower case."""
    return run.lower()
