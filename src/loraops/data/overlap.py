"""Repeated records, and training examples that an eval split also asks: both inflate scores unseen."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

from loraops.data.formats import Message


def conversation_key(messages: list[Message]) -> str:
    """Equal for conversations that differ only in whitespace."""
    return json.dumps([(m["role"], " ".join(m["content"].split())) for m in messages], ensure_ascii=False)


def prompt_key(messages: list[Message]) -> str:
    """The conversation before its last assistant turn: what the model is asked."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return conversation_key(messages[:last])


def duplicates(conversations: Iterable[list[Message]]) -> int:
    """How many conversations repeat an earlier one."""
    counts = Counter(conversation_key(c) for c in conversations)
    return sum(n - 1 for n in counts.values())


def shared_prompts(training: Iterable[list[Message]], eval_prompts: Iterable[list[Message]]) -> int:
    """How many training examples ask exactly what an eval example asks (whitespace aside)."""
    asked = {conversation_key(p) for p in eval_prompts}
    return sum(prompt_key(c) in asked for c in training)
