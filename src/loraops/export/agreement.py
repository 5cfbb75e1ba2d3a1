"""Proof by generation: an exported file, run by its engine, answers like the model that was evaluated.

The prompts are the evaluated ones, tokenized by the run's own tokenizer and handed to llama.cpp as token
ids, so both engines see the same input; generation is greedy on both sides. Agreement is measured twice:
the share of answers that are identical, and the share of the evaluated answer's tokens reproduced before
the first difference (averaged), which says how early a quantised model drifts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraops.eval.generate import encode_prompts
from loraops.export.llamacpp import native_output_captured
from loraops.records import Prediction


@dataclass(frozen=True)
class Agreement:
    artifact: str  # what ran: "base + LoRA", "merged F16", "merged Q4_K_M"
    files: list[str]
    examples: int
    exact: float  # share of identical answers
    tokens: float  # mean share of the evaluated answer's tokens reproduced before the first difference
    first_difference: dict[str, Any] | None  # where they first disagreed: file, line, both answers
    quantized: bool = False  # a quantisation loraops applied: measured and reported, not held to the threshold

    def summary(self) -> str:
        return f"{self.artifact}: {self.exact:.0%} identical answers, {self.tokens:.0%} token agreement"


def common_prefix_share(reference: list[int], other: list[int]) -> float:
    """Share of `reference`'s tokens that `other` reproduces before the first difference (1.0: same)."""
    if reference == other:
        return 1.0
    same = next((i for i, (a, b) in enumerate(zip(reference, other)) if a != b), min(len(reference), len(other)))
    return same / max(len(reference), len(other))


def measure(
    artifact: str,
    files: list[Path],
    rows: list[Prediction],
    tokenizer: Any,
    max_new_tokens: int,
    lora: Path | None,
    quantized: bool = False,
) -> Agreement:
    """Generate every row's prompt with llama.cpp on `files[0]` (+ the LoRA) and compare with the evaluated answers."""
    answers = generate_llamacpp(files[0], lora, tokenizer, [row.messages for row in rows], max_new_tokens)
    shares, first = [], None
    for row, answer in zip(rows, answers):
        expected = tokenizer.encode(row.prediction, add_special_tokens=False)
        shares.append(common_prefix_share(expected, tokenizer.encode(answer, add_special_tokens=False)))
        if answer != row.prediction and first is None:
            first = {"path": row.path, "line": row.line, "evaluated": row.prediction, "engine": answer}
    exact = sum(answer == row.prediction for row, answer in zip(rows, answers)) / max(len(rows), 1)
    names = [path.name for path in files] + ([lora.name] if lora else [])
    return Agreement(artifact, names, len(rows), exact, sum(shares) / max(len(shares), 1), first, quantized)


def generate_llamacpp(
    model: Path, lora: Path | None, tokenizer: Any, prompts: list[list[dict[str, Any]]], max_new_tokens: int
) -> list[str]:
    """Greedy answers from llama.cpp, decoded as loraops' own generation decodes them."""
    from llama_cpp import Llama

    encoded = encode_prompts(tokenizer, prompts)
    context = max((len(ids) for ids in encoded), default=0) + max_new_tokens + 8
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
        for ids in encoded:
            llm.reset()
            out: Any = llm.create_completion(
                prompt=ids,
                max_tokens=max_new_tokens,
                temperature=0.0,
                top_k=1,
                top_p=1.0,
                min_p=0.0,
                repeat_penalty=1.0,
            )
            answers.append(out["choices"][0]["text"].strip())
        llm.close()
    return answers
