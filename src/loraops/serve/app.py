"""The OpenAI-compatible HTTP API: GET /v1/models, POST /v1/chat/completions and /v1/completions (streamed or
not), vLLM's tokenizer routes, and GET /health; errors in OpenAI's shape (serve/errors.py)."""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Header
from fastapi.middleware.cors import CORSMiddleware

from loraops.inference import ChatModel
from loraops.serve.admission import Admission, BodyLimit
from loraops.serve.chat import chat_completion
from loraops.serve.completions import completion
from loraops.serve.errors import APIError, add_error_handlers
from loraops.serve.limits import Limits
from loraops.serve.replies import ReplyEvents
from loraops.serve.schemas import ChatCompletionRequest, CompletionRequest
from loraops.serve.tokens import tokenizer_routes


def create_app(
    model: ChatModel,
    api_key: str | None = None,
    max_new_tokens: int = 256,
    limits: Limits = Limits(),
    cors_origins: Sequence[str] = (),
) -> FastAPI:
    """The app serving `model` under its name; with `api_key`, every route but /health wants
    `Authorization: Bearer <key>`. `max_new_tokens` is the length of a chat reply when the request gives no
    max_tokens; `cors_origins`, the browser origins allowed to call it (none by default)."""
    app = FastAPI(title="loraops", docs_url=None, redoc_url=None, openapi_url=None)
    guarded = [Depends(_key_check(api_key))]
    router, root = APIRouter(prefix="/v1", dependencies=guarded), APIRouter(dependencies=guarded)
    admission, created = Admission(limits.max_queue, limits.max_batch), int(time.time())
    if model.supports_batching:
        model.enable_batching(limits.max_batch)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": model.name}

    @router.get("/models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(model, created)]}

    @router.get("/models/{model_id:path}")
    def get_model(model_id: str) -> dict[str, Any]:
        _check_model(model_id, model.name)
        return _model_card(model, created)

    @router.post("/chat/completions", response_model=None)
    def chat_completions(request: ChatCompletionRequest) -> dict[str, Any] | ReplyEvents:
        _check_model(request.model, model.name)
        return chat_completion(model, request, max_new_tokens, admission)

    @router.post("/completions", response_model=None)
    def completions(request: CompletionRequest) -> dict[str, Any] | ReplyEvents:
        _check_model(request.model, model.name)
        return completion(model, request, admission)

    tokenizer_routes(model, root)
    app.include_router(router)
    app.include_router(root)
    add_error_handlers(app)
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def _model_card(model: ChatModel, created: int) -> dict[str, Any]:
    context = model.context_length
    return {"id": model.name, "object": "model", "created": created, "owned_by": "loraops", "max_model_len": context}


def _key_check(api_key: str | None) -> Any:
    def check(authorization: str | None = Header(None)) -> None:
        if api_key is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        # Constant time, so the key cannot be guessed from response times.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
            raise APIError(
                401,
                "Missing or incorrect API key: send the server's key (LORAOPS_API_KEY) as "
                "`Authorization: Bearer <key>`.",
                code="invalid_api_key",
            )

    return check


def _check_model(requested: str, served: str) -> None:
    if requested != served:
        raise APIError(
            404,
            f"The model `{requested}` does not exist: this server serves `{served}` (see GET /v1/models).",
            param="model",
            code="model_not_found",
        )
