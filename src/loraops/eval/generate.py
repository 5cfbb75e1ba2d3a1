"""Batched greedy generation: left padding, KV cache, length-sorted batches, stop at EOS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loraops.config.schema import MIN_TEMPERATURE
from loraops.data.formats import Message
from loraops.data.tokenize import tokenize_prompt


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0

    @classmethod
    def sampling(
        cls, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0, do_sample: bool = False
    ) -> GenerationSettings:
        """OpenAI's convention: temperature 0 is greedy, above 0 samples (as does do_sample, at 1.0 then). A
        temperature too small to sample with (logits divided by it overflow) is greedy too, as vLLM treats it."""
        usable = temperature >= MIN_TEMPERATURE
        return cls(max_new_tokens, do_sample or usable, temperature if usable else 1.0, top_p)

    def kwargs(self) -> dict[str, Any]:
        sampling = {"temperature": self.temperature, "top_p": self.top_p} if self.do_sample else {}
        return {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample, **sampling}


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int
    stopped: bool  # ended with an end-of-turn/EOS token rather than running into max_new_tokens


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def encode_prompts(tokenizer: Any, prompts: list[list[Message]]) -> list[list[int]]:
    """Token ids of each prompt, rendered and tokenized exactly as training renders prompts."""
    return [tokenize_prompt(tokenizer, messages) for messages in prompts]


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[list[Message]],
    settings: GenerationSettings,
    batch_size: int = 16,
    progress: bool = True,
) -> list[Generation]:
    """Generate an answer for every prompt; output order matches input order."""
    import torch
    from tqdm.auto import tqdm

    encoded = encode_prompts(tokenizer, prompts)
    # Longest first: batches hold similar lengths (little padding) and memory peaks show up at once.
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    stops = stop_token_ids(model, tokenizer)
    results: list[Generation | None] = [None] * len(encoded)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    device = next(model.parameters()).device
    for batch in tqdm(batches, desc="generating", unit="batch", disable=not progress):
        padded = tokenizer.pad(
            {"input_ids": [encoded[i] for i in batch]}, padding=True, padding_side="left", return_tensors="pt"
        ).to(device)
        with torch.inference_mode():
            out = model.generate(
                **padded, **settings.kwargs(), eos_token_id=stops, pad_token_id=tokenizer.pad_token_id, use_cache=True
            )
        new = out[:, padded["input_ids"].shape[1] :].tolist()
        for index, tokens in zip(batch, new):
            results[index] = decode_answer(tokenizer, tokens, stops)
    return results  # type: ignore[return-value]


def decode_answer(tokenizer: Any, tokens: list[int], stops: list[int]) -> Generation:
    """An answer from its generated token ids: cut at the first stop token, special tokens dropped, stripped."""
    end = next((i for i, t in enumerate(tokens) if t in stops), None)
    kept = tokens if end is None else tokens[:end]
    return Generation(
        tokenizer.decode(kept, skip_special_tokens=True).strip(), len(kept) + (end is not None), end is not None
    )
