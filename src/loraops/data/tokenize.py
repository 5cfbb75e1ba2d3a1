"""Render chat messages with the model's own chat template and build loss masks.

The text is rendered exactly as inference renders it (`apply_chat_template`), then
split into segments at the assistant turns: each segment is tokenized on its own,
so the prompt tokens match what the model sees at generation time, and only
assistant tokens, ending with the end-of-turn/EOS token, carry labels.
"""

from __future__ import annotations

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


def assistant_segments(tokenizer: Any, messages: list[Message]) -> list[tuple[str, bool]]:
    """Split the rendered conversation into (text, trained) segments."""
    full = render(tokenizer, messages)
    segments: list[tuple[str, bool]] = []
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
        segments += [(full[cursor:start], False), (full[start:end], True)]
        cursor = end
    segments.append((full[cursor:], False))
    return [(text, trained) for text, trained in segments if text]


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
    for text, trained in assistant_segments(tokenizer, messages):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if trained and eos is not None and (not ids or ids[-1] != eos):
            ids = ids + [eos]  # a template without EOS at end of turn would teach the model never to stop
        input_ids += ids
        labels += ids if trained else [IGNORE_INDEX] * len(ids)
    truncated = len(input_ids) > max_length
    return Encoded(input_ids[:max_length], labels[:max_length], truncated, len(input_ids))
