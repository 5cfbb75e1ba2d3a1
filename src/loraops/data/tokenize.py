"""Render chat messages with the model's own chat template and build loss masks.

The text is rendered exactly as inference renders it (`apply_chat_template`), then
split into segments at the assistant turns: each segment is tokenized on its own,
so the prompt tokens match what the model sees at generation time, and only
assistant tokens, ending with the end-of-turn/EOS token, carry labels. Message text
is always tokenized as text: a control-token string typed into it stays text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from loraops.data.formats import Message
from loraops.data.messages import PROMPT_ROLE, REASONING
from loraops.errors import LoraopsError

IGNORE_INDEX = -100

# Used only when a tokenizer has no chat template (most base models); it is saved with
# the adapter, so evaluation renders prompts the same way.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give the tokenizer a template and pad token if it lacks them; True if a template was added."""
    if tokenizer.pad_token is None:
        # Padding positions never carry labels (the collator masks them by position),
        # so reusing EOS as pad cannot hide the EOS the model must learn.
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = CHATML_TEMPLATE
    return True


def with_default_system(template: str, system: str) -> str:
    """`template` that starts a conversation without a system turn with `system`, as training did; for runtimes
    that render the template themselves (MLflow, vLLM) and know nothing of a run's system_prompt."""
    literal = json.dumps(system, ensure_ascii=False)  # a Jinja string literal: Jinja reads JSON's escapes
    return (
        "{%- if not messages or messages[0]['role'] != 'system' %}"
        f"{{%- set messages = [{{'role': 'system', 'content': {literal}}}] + messages %}}"
        "{%- endif %}"
    ) + template


def render(
    tokenizer: Any,
    messages: list[Message],
    add_generation_prompt: bool = False,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    key = reasoning_key(tokenizer) if any(m.get(REASONING) for m in messages) else None
    if key is not None and key != REASONING:  # gpt-oss's template reads a turn's reasoning as `thinking`
        messages = [{(key if k == REASONING else k): v for k, v in m.items()} for m in messages]
    return tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def reasoning_key(tokenizer: Any) -> str | None:
    """The message key the chat template renders a turn's reasoning from (Qwen3 and DeepSeek's
    `reasoning_content`, gpt-oss's `thinking`), or None: a template without one would drop it silently."""
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else str(tokenizer.chat_template)
    if REASONING in template:
        return REASONING
    return "thinking" if re.search(r"\.thinking\b|\[['\"]thinking['\"]\]", template) else None


def renders_tools(tokenizer: Any) -> bool:
    """Whether the chat template knows tool calls at all: one that ignores them would drop them silently."""
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else str(tokenizer.chat_template)
    return "tool_calls" in template or "tools" in template


def assistant_segments(
    tokenizer: Any,
    messages: list[Message],
    untrained: frozenset[int] = frozenset(),
    tools: list[dict[str, Any]] | None = None,
    mask_reasoning: bool = False,
) -> tuple[str, list[tuple[int, int, bool]]]:
    """The rendered conversation and its (start, end, trained) segments, covering it in order; with
    `mask_reasoning`, a trained turn's reasoning (and what the template writes before it) is not trained."""
    full = render(tokenizer, messages, tools=tools)
    segments: list[tuple[int, int, bool]] = []
    cursor = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:i], add_generation_prompt=True, tools=tools)
        start = len(prompt)
        upto = render(tokenizer, messages[: i + 1], tools=tools)
        if not (full.startswith(upto) and upto.startswith(prompt)):
            raise LoraopsError(
                "the chat template does not render conversations prefix by prefix, "
                f"so assistant turn {i} cannot be located for loss masking"
            )
        end = len(upto.rstrip())  # whitespace after the end-of-turn token is not the model's to learn
        trained = i not in untrained
        if trained and mask_reasoning and message.get(REASONING):
            start = _after_reasoning(full, start, end, message[REASONING], i)
        segments += [(cursor, start, False), (start, end, trained)]
        cursor = end
    segments.append((cursor, len(full), False))
    return full, [(a, b, trained) for a, b, trained in segments if b > a]


def _after_reasoning(full: str, start: int, end: int, reasoning: str, turn: int) -> int:
    at = full.find(reasoning, start, end)
    if at < 0:
        raise LoraopsError(
            f"the chat template changes the reasoning of assistant turn {turn}, so it cannot be masked; "
            "set reasoning=train or reasoning=drop"
        )
    return at + len(reasoning)


def _special_strings(tokenizer: Any) -> re.Pattern[str] | None:
    specials = sorted({t.content for t in tokenizer.added_tokens_decoder.values() if t.special}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, specials))) if specials else None


def template_written(tokenizer: Any, messages: list[Message]) -> list[str]:
    """Text the chat template writes that is not in the messages and is more than markup: a default system
    prompt (SmolLM2's "You are a helpful AI assistant named SmolLM..."), a date line, an instruction."""
    full, cursor, gaps = render(tokenizer, messages), 0, []
    for message in messages:
        body = message.get("content") or ""
        at = full.find(body, cursor) if body else -1
        if at >= 0:
            gaps.append(full[cursor:at])
            cursor = at + len(body)
    gaps.append(full[cursor:])
    pattern = _special_strings(tokenizer)
    pieces = [p.strip() for gap in gaps for p in (pattern.split(gap) if pattern else [gap]) for p in p.split("\n")]
    return [p for p in pieces if len(p.split()) >= 3]


def control_tokens(tokenizer: Any, text: str, messages: list[Message]) -> list[tuple[int, int]]:
    """(start, end) of the template's own control tokens in `text`, the rendering of `messages`.

    A control-token string inside a message's content (a user typing `<|im_end|>`) is not one of
    them: it is text, and tokenizing it as a control token would let a record forge a turn.
    """
    pattern = _special_strings(tokenizer)
    if pattern is None:
        return []
    content: list[tuple[int, int]] = []
    cursor = 0
    for message in messages:
        body = message.get("content") or ""
        at = text.find(body, cursor) if body else -1
        if at < 0:
            if pattern.search(body):
                raise LoraopsError(
                    "the chat template changes message text, so the control-token strings in it "
                    "cannot be told from the template's own"
                )
            continue
        content.append((at, at + len(body)))
        cursor = at + len(body)
    inside = lambda a, b: any(s <= a and b <= e for s, e in content)  # noqa: E731
    return [m.span() for m in pattern.finditer(text) if not inside(*m.span())]


def tokenize_range(tokenizer: Any, text: str, start: int, end: int, controls: list[tuple[int, int]]) -> list[int]:
    """Token ids of text[start:end]: the listed control tokens as such, everything else as plain text."""
    ids: list[int] = []
    pos = start
    for a, b in [(a, b) for a, b in controls if start <= a and b <= end] + [(end, end)]:
        if a > pos:
            ids += tokenizer(text[pos:a], add_special_tokens=False, split_special_tokens=True)["input_ids"]
        if b > a:
            ids.append(tokenizer.convert_tokens_to_ids(text[a:b]))
        pos = b
    return ids


def tokenize_prompt(tokenizer: Any, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> list[int]:
    """The token ids generation starts from: rendered with the generation prompt, tokenized as training does;
    a continuation's prompt is its text as it is."""
    if len(messages) == 1 and messages[0]["role"] == PROMPT_ROLE:
        return _plain(tokenizer, messages[0]["content"])
    text = render(tokenizer, messages, add_generation_prompt=True, tools=tools)
    return tokenize_range(tokenizer, text, 0, len(text), control_tokens(tokenizer, text, messages))


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool
    original_length: int

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)

    @property
    def tokens(self) -> int:
        return len(self.input_ids)

    @property
    def answer_cut(self) -> bool:
        """max_length cut a trained answer short (it still trains, without its end)."""
        return self.truncated and bool(self.labels) and self.labels[-1] != IGNORE_INDEX


def _plain(tokenizer: Any, text: str) -> list[int]:
    """Text tokenized as it is, with the special tokens the tokenizer adds to any text (a BOS for Llama's)."""
    return list(tokenizer(text, add_special_tokens=True, split_special_tokens=True)["input_ids"])


def encode_continuation(tokenizer: Any, prompt: str, completion: str, max_length: int) -> Encoded:
    """A continuation pair: the prompt's tokens as context, then the completion's, ending with EOS, trained.
    Tokenized apart, as generation sees them: the prompt alone, then what the model adds."""
    context = _plain(tokenizer, prompt)
    answer = tokenizer(completion, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    answer += [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids, labels = context + answer, [IGNORE_INDEX] * len(context) + answer
    return Encoded(ids[:max_length], labels[:max_length], len(ids) > max_length, len(ids))


def encode_text(tokenizer: Any, text: str, max_length: int) -> Encoded:
    """Raw text (continued pre-training): every token trained, ending with EOS so documents stay apart."""
    ids = tokenizer(text, add_special_tokens=True, split_special_tokens=True)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return Encoded(ids[:max_length], ids[:max_length], len(ids) > max_length, len(ids))


def encode(
    tokenizer: Any,
    messages: list[Message],
    max_length: int,
    untrained: frozenset[int] = frozenset(),
    tools: list[dict[str, Any]] | None = None,
    mask_reasoning: bool = False,
) -> Encoded:
    """Token ids and labels for one conversation; labels are IGNORE_INDEX outside trained assistant turns."""
    input_ids: list[int] = []
    labels: list[int] = []
    eos = tokenizer.eos_token_id
    full, segments = assistant_segments(tokenizer, messages, untrained, tools, mask_reasoning)
    controls = control_tokens(tokenizer, full, messages)
    for start, end, trained in segments:
        ids = tokenize_range(tokenizer, full, start, end, controls)
        if trained and eos is not None and (not ids or ids[-1] != eos):
            ids = ids + [eos]  # a template without EOS at end of turn would teach the model never to stop
        input_ids += ids
        labels += ids if trained else [IGNORE_INDEX] * len(ids)
    truncated = len(input_ids) > max_length
    return Encoded(input_ids[:max_length], labels[:max_length], truncated, len(input_ids))
