"""Render chat messages with the model's own chat template and build loss masks.

The text is rendered exactly as inference renders it (`apply_chat_template`), then
split into segments at the assistant turns: each segment is tokenized on its own,
so the prompt tokens match what the model sees at generation time, and only
assistant tokens, ending with the end-of-turn/EOS token, carry labels. Message text
is always tokenized as text: a control-token string typed into it stays text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from loraops.data.formats import Message
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


def render(tokenizer: Any, messages: list[Message], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_segments(tokenizer: Any, messages: list[Message]) -> tuple[str, list[tuple[int, int, bool]]]:
    """The rendered conversation and its (start, end, trained) segments, covering it in order."""
    full = render(tokenizer, messages)
    segments: list[tuple[int, int, bool]] = []
    cursor = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(render(tokenizer, messages[:i], add_generation_prompt=True))
        upto = render(tokenizer, messages[: i + 1])
        if not (full.startswith(upto) and upto.startswith(full[:start])):
            raise LoraopsError(
                "the chat template does not render conversations prefix by prefix, "
                f"so assistant turn {i} cannot be located for loss masking"
            )
        end = len(upto.rstrip())  # whitespace after the end-of-turn token is not the model's to learn
        segments += [(cursor, start, False), (start, end, True)]
        cursor = end
    segments.append((cursor, len(full), False))
    return full, [(a, b, trained) for a, b, trained in segments if b > a]


def _special_strings(tokenizer: Any) -> re.Pattern[str] | None:
    specials = sorted({t.content for t in tokenizer.added_tokens_decoder.values() if t.special}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, specials))) if specials else None


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
        at = text.find(message["content"], cursor) if message["content"] else -1
        if at < 0:
            if pattern.search(message["content"]):
                raise LoraopsError("the chat template changes message text, so the control-token strings in it "
                                   "cannot be told from the template's own")  # fmt: skip
            continue
        content.append((at, at + len(message["content"])))
        cursor = at + len(message["content"])
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


def tokenize_prompt(tokenizer: Any, messages: list[Message]) -> list[int]:
    """The token ids generation starts from: rendered with the generation prompt, tokenized as training does."""
    text = render(tokenizer, messages, add_generation_prompt=True)
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


def encode(tokenizer: Any, messages: list[Message], max_length: int) -> Encoded:
    """Token ids and labels for one conversation; labels are IGNORE_INDEX outside assistant turns."""
    input_ids: list[int] = []
    labels: list[int] = []
    eos = tokenizer.eos_token_id
    full, segments = assistant_segments(tokenizer, messages)
    controls = control_tokens(tokenizer, full, messages)
    for start, end, trained in segments:
        ids = tokenize_range(tokenizer, full, start, end, controls)
        if trained and eos is not None and (not ids or ids[-1] != eos):
            ids = ids + [eos]  # a template without EOS at end of turn would teach the model never to stop
        input_ids += ids
        labels += ids if trained else [IGNORE_INDEX] * len(ids)
    truncated = len(input_ids) > max_length
    return Encoded(input_ids[:max_length], labels[:max_length], truncated, len(input_ids))
