"""Repeated records, and training examples that an eval split also asks: both inflate scores unseen."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

from loraops.data.formats import Message
from loraops.records import Overlap


def conversation_key(messages: list[Message]) -> str:
    """Equal for conversations that differ only in whitespace."""
    return json.dumps(
        [(m["role"], " ".join(m["content"].split()), m.get("tool_calls")) for m in messages],
        ensure_ascii=False,
        sort_keys=True,
    )


def _asked(messages: list[Message]) -> list[Message]:
    """The turns before the last assistant turn; all of a raw-text record (it may quote any question)."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    return messages[:last]


def prompt_key(messages: list[Message]) -> str:
    """The conversation before its last assistant turn: what the model is asked."""
    return conversation_key(_asked(messages))


def prompt_text(messages: list[Message]) -> str:
    """The text of what a training conversation asks: every turn before its last assistant turn."""
    return " ".join(m["content"] for m in _asked(messages))


def duplicates(conversations: Iterable[list[Message]]) -> int:
    """How many conversations repeat an earlier one."""
    counts = Counter(conversation_key(c) for c in conversations)
    return sum(n - 1 for n in counts.values())


def shared_prompts(eval_prompts: Iterable[list[Message]], training: Iterable[list[Message]]) -> int:
    """How many eval prompts a training conversation asks exactly (whitespace aside)."""
    trained = {prompt_key(c) for c in training}
    return sum(conversation_key(p) in trained for p in eval_prompts)


def _shingles(text: str, n: int = 3) -> set[str]:
    words = " ".join(text.lower().split()).split(" ")
    return {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def near_duplicates(training: Iterable[str], evaluated: Iterable[str], threshold: float = 0.8) -> list[bool]:
    """For each evaluated text: is some training text a near duplicate (word-3-gram Jaccard >= threshold)?

    An inverted index of the training shingles keeps this linear in practice: only texts that share
    a shingle are ever compared.
    """
    sets = [_shingles(t) for t in training]
    index: dict[str, list[int]] = {}
    for i, shingles in enumerate(sets):
        for shingle in shingles:
            index.setdefault(shingle, []).append(i)
    found = []
    for text in evaluated:
        mine = _shingles(text)
        shared = Counter(i for shingle in mine for i in index.get(shingle, ()))
        found.append(any(n / len(mine | sets[i]) >= threshold for i, n in shared.items()))
    return found


def split_overlap(training: list[list[Message]], prompts: list[list[Message]]) -> Overlap:
    """How many of an eval split's prompts training also asks: exactly (whitespace aside) or nearly."""
    texts = [prompt_text(c) for c in training]
    near = sum(near_duplicates(texts, [" ".join(m["content"] for m in p) for p in prompts]))
    n = len(prompts)
    return Overlap(n=n, exact=shared_prompts(prompts, training), near=near, share=round(near / max(1, n), 4))
