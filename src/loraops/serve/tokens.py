"""vLLM's tokenizer routes (/tokenize, /detokenize, /tokenizer_info), which lm-evaluation-harness's API models
use when a server offers them, so a benchmark runs against the server with no copy of the tokenizer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from loraops.inference import ChatModel
from loraops.serve.errors import APIError
from loraops.serve.schemas import DetokenizeRequest, TokenizeRequest


def tokenizer_routes(model: ChatModel, router: APIRouter) -> None:
    tokenizer = model.tokenizer

    @router.post("/tokenize")
    def tokenize(request: TokenizeRequest) -> dict[str, Any]:
        tokens = model.encode_text(request.prompt, request.add_special_tokens)
        return {"tokens": tokens, "count": len(tokens), "max_model_len": model.context_length}

    @router.post("/detokenize")
    def detokenize(request: DetokenizeRequest) -> dict[str, Any]:
        return {"prompt": tokenizer.decode(checked_ids(model, request.tokens, "tokens"))}

    @router.get("/tokenizer_info")
    def tokenizer_info() -> dict[str, Any]:
        return {
            "tokenizer_class": type(tokenizer).__name__,
            "eos_token": tokenizer.eos_token,
            "bos_token": tokenizer.bos_token,
            "pad_token": tokenizer.pad_token,
            "chat_template": tokenizer.chat_template,
            "model_max_length": model.context_length,
        }


def checked_ids(model: ChatModel, ids: list[int], param: str) -> list[int]:
    """`ids`, when every one is in the model's vocabulary."""
    size = len(model.tokenizer)
    wrong = next((t for t in ids if not 0 <= t < size), None)
    if wrong is not None:
        raise APIError(400, f"{param}: token id {wrong} is not in this model's vocabulary (0-{size - 1})", param=param)
    return ids
