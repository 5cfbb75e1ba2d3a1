"""Proof by generation: an exported file, run by its engine, answers like the fine-tuned PEFT model.

The prompts are an eval split's, tokenized by the run's own tokenizer and handed to llama.cpp as token ids,
so both engines see the same input; generation is greedy on both sides, and llama.cpp's tokens are decoded
by the same tokenizer. Agreement is measured twice: the share of answers that are identical, and the share
of the PEFT answer's tokens reproduced before the first difference (averaged), which says how early a
quantised model drifts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraops.eval.generate import decode_answer, encode_prompts
from loraops.export.llamacpp import native_output_captured
from loraops.records import Prediction


@dataclass(frozen=True)
class Agreement:
    artifact: str  # what ran: "base + LoRA", "merged F16", "merged Q4_K_M"
    files: list[str]
    split: str
    examples: int
    exact: float  # share of identical answers
    tokens: float  # mean share of the reference answer's tokens reproduced before the first difference
    first_difference: dict[str, Any] | None  # where they first disagreed: file, line, both answers
    quantized: bool = False  # a quantisation loraops applied: measured and reported, not held to the threshold

    def summary(self) -> str:
        return f"{self.artifact} on {self.split}: {self.exact:.0%} identical answers, {self.tokens:.0%} token agreement"


def common_prefix_share(reference: list[int], other: list[int]) -> float:
    """Share of `reference`'s tokens that `other` reproduces before the first difference (1.0: same)."""
    if reference == other:
        return 1.0
    same = next((i for i, (a, b) in enumerate(zip(reference, other)) if a != b), min(len(reference), len(other)))
    return same / max(len(reference), len(other))


def compare(
    artifact: str,
    files: list[str],
    split: str,
    rows: list[Prediction],
    answers: list[str],
    tokenizer: Any,
    quantized: bool,
) -> Agreement:
    """How closely `answers` (the engine's) reproduce the rows' predictions (the PEFT model's)."""
    shares, first = [], None
    for row, answer in zip(rows, answers):
        expected = tokenizer.encode(row.prediction, add_special_tokens=False)
        shares.append(common_prefix_share(expected, tokenizer.encode(answer, add_special_tokens=False)))
        if answer != row.prediction and first is None:
            first = {"path": row.path, "line": row.line, "reference": row.prediction, "engine": answer}
    exact = sum(answer == row.prediction for row, answer in zip(rows, answers)) / max(len(rows), 1)
    return Agreement(artifact, files, split, len(rows), exact, sum(shares) / max(len(shares), 1), first, quantized)


def generate_llamacpp(
    model: Path,
    lora: Path | None,
    tokenizer: Any,
    prompts: list[list[dict[str, Any]]],
    budgets: list[int],
    stops: list[int],
) -> list[str]:
    """Greedy answers from llama.cpp, each within its token budget: token ids decoded by the run's tokenizer
    exactly as loraops' own generation decodes them (llama.cpp's own text drops partial UTF-8 bytes)."""
    from llama_cpp import Llama

    encoded = encode_prompts(tokenizer, prompts)
    context = max((len(ids) + budget for ids, budget in zip(encoded, budgets)), default=0) + 8
    answers = []
    with native_output_captured(model.name + (f" with {lora.name}" if lora else "")):
        llm = Llama(
            model_path=str(model),
            lora_path=str(lora) if lora else None,
            n_ctx=context,
            n_threads=int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1),
            seed=0,
            verbose=False,
        )
        for ids, budget in zip(encoded, budgets):
            tokens: list[int] = []
            for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
                tokens.append(token)
                if token in stops or len(tokens) >= budget:
                    break
            answers.append(decode_answer(tokenizer, tokens, stops).text)
        llm.close()
    return answers
