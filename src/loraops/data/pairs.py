"""Preference examples as tokens: the prompt once, and each answer's tokens after it.

The two answers of a pair are rendered by the chat template exactly as supervised training renders a
conversation (`tokenize.encode`), so the trained spans are the ones `check` shows for SFT; TRL's
preference trainers get `prompt_ids` and the answers' ids, and score every answer token.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from loraops.data.formats import Example, Message, shared_length
from loraops.data.tokenize import IGNORE_INDEX, encode
from loraops.errors import LoraopsError


@dataclass
class EncodedPair:
    """A preference example's tokens: a pair (chosen and rejected), or one labelled answer (KTO: `rejected` empty)."""

    prompt_ids: list[int]
    chosen_ids: list[int]  # the pair's chosen answer, or the labelled answer
    rejected_ids: list[int]
    label: bool | None
    truncated: bool  # max_length or max_prompt_length cut something
    original_length: int  # the prompt and its longer answer, before any cut
    answer_cut: bool  # an answer lost its end to max_length (it still trains)

    @property
    def trained_tokens(self) -> int:
        return len(self.chosen_ids) + len(self.rejected_ids)  # both empty when an answer was cut to nothing

    @property
    def tokens(self) -> int:
        """What the model reads: the prompt once per answer."""
        answers = [a for a in (self.chosen_ids, self.rejected_ids) if a]
        return sum(len(self.prompt_ids) + len(a) for a in answers)

    def answers(self) -> list[tuple[str, list[int]]]:
        """Each answer by name (chosen, rejected; or desirable/undesirable for a labelled one) and its tokens."""
        if self.label is not None:
            return [("desirable" if self.label else "undesirable", self.chosen_ids)]
        return [("chosen", self.chosen_ids), ("rejected", self.rejected_ids)]


def encode_preference(
    tokenizer: Any, example: Example, max_length: int, max_prompt_length: int | None = None
) -> EncodedPair:
    """The example's prompt and answers; an answer cut to nothing by max_length leaves no trained token."""
    answers = [list(example.messages[example.answer_from :])]
    if example.is_pair:
        answers.append(list(example.rejected))
    rendered = [_rendered(tokenizer, example, answer) for answer in answers]
    prompt = rendered[0][0]
    for other, _ in rendered[1:]:
        prompt = prompt[: shared_length(prompt, other)]
    # Each answer from where the prompts agree: a template that renders the prompt alike gives its answer alone.
    tails = [(p + a)[len(prompt) :] for p, a in rendered]
    longest = len(prompt) + max(len(t) for t in tails)
    cut_prompt = max_prompt_length is not None and len(prompt) > max_prompt_length
    if cut_prompt:
        prompt = prompt[len(prompt) - (max_prompt_length or 0) :]
    room = max(0, max_length - len(prompt))
    cut = [t[:room] for t in tails]
    kept = all(cut)
    chosen, rejected = (cut[0], cut[1] if len(cut) > 1 else []) if kept else ([], [])
    return EncodedPair(
        prompt_ids=prompt,
        chosen_ids=chosen,
        rejected_ids=rejected,
        label=example.label,
        truncated=cut_prompt or any(len(t) > room for t in tails),
        original_length=longest,
        answer_cut=kept and any(len(t) > room for t in tails),
    )


def _rendered(tokenizer: Any, example: Example, answer: list[Message]) -> tuple[list[int], list[int]]:
    """(the prompt's tokens, the answer's) for the prompt followed by this answer; only the answer trains."""
    messages = [*example.prompt, *answer]
    context = {i for i, m in enumerate(example.prompt) if m["role"] == "assistant"}
    enc = encode(tokenizer, messages, sys.maxsize, example.untrained | frozenset(context), example.tools)
    trained = [i for i, label in enumerate(enc.labels) if label != IGNORE_INDEX]
    if not trained:
        raise LoraopsError("the chat template renders no answer tokens for this pair")
    return enc.input_ids[: trained[0]], enc.input_ids[trained[0] : trained[-1] + 1]
