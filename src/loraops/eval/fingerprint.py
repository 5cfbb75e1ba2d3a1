"""What a split's score depends on, recorded with it, so `compare` only compares like with like."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from loraops.errors import LoraopsError
from loraops.eval.data import EvalExample
from loraops.eval.generate import GenerationSettings
from loraops.eval.text import WORDS_VERSION
from loraops.records import Prediction

PAIRS_SCORED_BY = "summed log-probability of each answer's tokens after the prompt"
# What was asked and how it was scored: must match whatever the two sides are.
DATA_FIELDS = ("examples_sha256", "n", "generation", "scoring")
# How prompts became tokens: must match when a run is compared with its own base model.
MODEL_FIELDS = ("base_model", "tokenizer_sha256", "chat_template_sha256")


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def example_id(example: EvalExample) -> str:
    """Names an example by what it asks and expects, so two evaluations pair up example by example."""
    return _row_id(example.prompt, example.reference, example.rejected)


def asked(example: EvalExample) -> dict[str, Any]:
    """A prediction row's fields that say what was asked and expected, under the example's id."""
    return {
        "id": example_id(example),
        "path": example.path,
        "line": example.line,
        "prompt": example.prompt[-1]["content"],
        "messages": example.prompt,
        "reference": example.reference,
        "rejected": example.rejected,
    }


def _row_id(messages: Any, reference: str, rejected: str | None = None) -> str:
    return _sha256([messages, reference] if rejected is None else [messages, reference, rejected])[:16]


def check_rows(fingerprint: dict[str, Any], rows: list[Prediction], where: Path) -> None:
    """Each row's id is what it asks and expects, and the ids together are the examples the fingerprint names:
    a row edited after evaluation (a reference made to match its prediction) is refused, never judged."""
    for line, row in enumerate(rows, start=1):
        if row.id != _row_id(row.messages, row.reference, row.rejected):
            raise LoraopsError(
                f"{where}:{line}: the prompt or reference is not the one evaluated (it no longer matches the row's "
                "id); the file was changed after `loraops eval`, so it is not judged: evaluate again"
            )
    if _sha256([row.id for row in rows]) != fingerprint.get("examples_sha256"):
        raise LoraopsError(
            f"{where}: these rows are not the examples the split's record names (its examples_sha256); the file "
            "was changed after `loraops eval`, so it is not judged: evaluate again"
        )


def split_fingerprint(
    examples: list[EvalExample],
    tokenizer: Any,
    base_model: dict[str, str | None],
    settings: GenerationSettings | None,
    seed: int,
    bleu_tokenize: str,
) -> dict[str, Any]:
    """What the split's scores depend on; `settings` None for a preference split, which generates nothing."""
    return {
        "examples_sha256": _sha256([example_id(e) for e in examples]),
        "n": len(examples),
        **(_generated(settings, seed, bleu_tokenize) if settings else {"scoring": {"pairs": PAIRS_SCORED_BY}}),
        "base_model": base_model,
        "tokenizer_sha256": _sha256(sorted(tokenizer.get_vocab().items())),
        "chat_template_sha256": hashlib.sha256(str(tokenizer.chat_template).encode()).hexdigest(),
    }


def _generated(settings: GenerationSettings, seed: int, bleu_tokenize: str) -> dict[str, Any]:
    sampling = (
        {"temperature": settings.temperature, "top_p": settings.top_p, "seed": seed} if settings.do_sample else {}
    )
    return {
        "generation": {"max_new_tokens": settings.max_new_tokens, "do_sample": settings.do_sample, **sampling},
        "scoring": {"words": WORDS_VERSION, "bleu_tokenize": bleu_tokenize},
    }


def differences(a: dict[str, Any], b: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
    """`field: a-value vs b-value` for every field that differs."""
    return [f"{f}: {_short(a.get(f))} vs {_short(b.get(f))}" for f in fields if a.get(f) != b.get(f)]


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text[:12] if isinstance(value, str) and len(value) == 64 else text
