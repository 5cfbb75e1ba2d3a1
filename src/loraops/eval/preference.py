"""Preference splits: per pair, which of its two answers the model finds likelier.

A split of pairs (any layout training reads as pairs) is scored without generating: each pair is rendered
as preference training renders it (data/pairs.py) and each answer gets the summed log-probability of its
tokens after the prompt. A row records both; its `prediction` is the answer the model prefers, and
`preference_accuracy` is 1 when that is the chosen one (TRL's reward accuracy, with no reference model:
the model's own preference, so the fine-tuned model and its base are scored alike).
"""

from __future__ import annotations

import sys
from typing import Any

from loraops.data.formats import Example, Message
from loraops.data.pairs import encode_preference
from loraops.eval.data import EvalExample
from loraops.eval.fingerprint import asked
from loraops.records import Prediction, Scores


def are_pairs(rows: list[Prediction]) -> bool:
    """Rows of a preference split (each a pair scored by log-likelihood), as opposed to generated answers."""
    return bool(rows) and rows[0].rejected is not None


def preference_scores(logps: dict[str, float]) -> dict[str, float]:
    """A pair's scores from its two answers' log-likelihoods (a tie is not a preference)."""
    margin = logps["chosen"] - logps["rejected"]
    return {"preference_accuracy": float(margin > 0), "logp_margin": margin}


def preference_metrics(rows: list[Prediction]) -> Scores:
    """A split's: the share of pairs whose chosen answer is the likelier (%), and the mean margin in nats."""
    n = len(rows)
    mean = lambda key: sum(r.scores[key] for r in rows) / max(1, n)  # noqa: E731
    return {
        "preference_accuracy": round(100 * mean("preference_accuracy"), 4),
        "logp_margin": round(mean("logp_margin"), 6),
        "n": n,
    }


def score_pairs(model: Any, tokenizer: Any, examples: list[EvalExample], batch_size: int) -> list[Prediction]:
    """One scored row per pair."""
    logps = pair_logps(model, tokenizer, [(e.prompt, e.reference, e.rejected or "") for e in examples], batch_size)
    return [
        Prediction(
            **asked(e),
            prediction=e.reference if scores["chosen"] > scores["rejected"] else e.rejected or "",
            logps=scores,
            scores=preference_scores(scores),
        )
        for e, scores in zip(examples, logps)
    ]


def pair_logps(
    model: Any, tokenizer: Any, pairs: list[tuple[list[Message], str, str]], batch_size: int
) -> list[dict[str, float]]:
    """{chosen, rejected}: each answer's log-likelihood after the prompt, for (prompt, chosen, rejected) pairs."""
    sequences = []
    for prompt, chosen, rejected in pairs:
        enc = encode_preference(tokenizer, _pair(prompt, chosen, rejected), sys.maxsize)
        sequences += [(enc.prompt_ids, enc.chosen_ids), (enc.prompt_ids, enc.rejected_ids)]
    scores = answer_logps(model, sequences, batch_size, tokenizer.pad_token_id or 0)
    return [{"chosen": scores[i], "rejected": scores[i + 1]} for i in range(0, len(scores), 2)]


def _pair(prompt: list[Message], chosen: str, rejected: str) -> Example:
    answer = [{"role": "assistant", "content": chosen}]
    return Example([*prompt, *answer], "preference", "", 0, answer_from=len(prompt), rejected=_turn(rejected))


def _turn(text: str) -> tuple[Message, ...]:
    return ({"role": "assistant", "content": text},)


def answer_logps(model: Any, sequences: list[tuple[list[int], list[int]]], batch_size: int, pad: int) -> list[float]:
    """The summed log-probability of each answer's tokens given its prompt, in batches of right-padded rows."""
    import torch

    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        width = max(len(p) + len(a) for p, a in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (prompt, answer) in enumerate(chunk):
            ids[i, : len(prompt) + len(answer)] = torch.tensor(prompt + answer)
            mask[i, : len(prompt) + len(answer)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
            per_token = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None].to(device))[..., 0]
        out += [float(per_token[i, len(p) - 1 : len(p) + len(a) - 1].sum()) for i, (p, a) in enumerate(chunk)]
    return out
