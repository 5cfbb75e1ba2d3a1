"""The OpenAI-compatible HTTP API: GET /v1/models and POST /v1/chat/completions (streamed or not).

Every error, ours or the framework's (validation, unknown route), is answered in OpenAI's error shape,
`{"error": {"message", "type", "param", "code"}}`, so clients raise their usual exceptions.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, format_sse_event
from starlette.exceptions import HTTPException

from loraops.data.formats import Message
from loraops.data.messages import RecordProblem, content_text
from loraops.errors import LoraopsError
from loraops.eval.generate import GenerationSettings
from loraops.inference import ChatModel, PromptTooLong, Reply
from loraops.serve.schemas import ChatCompletionRequest

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"


class APIError(Exception):
    def __init__(
        self, status: int, message: str, type: str = INVALID_REQUEST, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.body = status, {"message": message, "type": type, "param": param, "code": code}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.body}, status_code=self.status)


def create_app(model: ChatModel, api_key: str | None = None, max_new_tokens: int = 256) -> FastAPI:
    """The app serving `model` under its name; with `api_key`, every /v1 route wants `Authorization: Bearer <key>`.

    `max_new_tokens` is the length of a reply when the request gives no max_tokens.
    """
    app = FastAPI(title="loraops", docs_url=None, redoc_url=None, openapi_url=None)
    router = APIRouter(prefix="/v1", dependencies=[Depends(_key_check(api_key))])
    created = int(time.time())

    @router.get("/models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(model.name, created)]}

    @router.get("/models/{model_id:path}")
    def get_model(model_id: str) -> dict[str, Any]:
        _check_model(model_id, model.name)
        return _model_card(model.name, created)

    @router.post("/chat/completions", response_model=None)
    def chat_completions(request: ChatCompletionRequest) -> dict[str, Any] | EventSourceResponse:
        _check_model(request.model, model.name)
        reply = _reply(model, request, max_new_tokens)
        completion = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model.name}
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return _ReplyEvents(reply, _events(reply, completion, include_usage))
        reply.complete()
        message = {"role": "assistant", "content": reply.text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}
        return {**completion, "object": "chat.completion", "choices": [choice], "usage": _usage(reply)}

    app.include_router(router)
    _add_error_handlers(app)
    return app


def _model_card(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "loraops"}


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


def _reply(model: ChatModel, request: ChatCompletionRequest, max_new_tokens: int) -> Reply:
    if request.n != 1:
        raise APIError(
            400,
            f"n={request.n}: this server generates one choice per request; send n=1 (or leave "
            "it out) and repeat the request for more.",
            param="n",
        )
    if request.tools:
        raise APIError(400, "tools are not supported by this server; send the request without them.", param="tools")
    temperature = 1.0 if request.temperature is None else request.temperature  # OpenAI's default
    limit = request.max_completion_tokens or request.max_tokens or max_new_tokens
    settings = GenerationSettings.sampling(limit, temperature, 1.0 if request.top_p is None else request.top_p)
    # A reply length the client asked for is honoured or refused; the server's default is cut to fit.
    fit = request.max_completion_tokens is None and request.max_tokens is None
    messages = _messages(request, model.system_prompt)
    try:
        return model.reply(messages, settings, request.stop_strings(), request.seed, fit)
    except PromptTooLong as exc:
        raise APIError(400, str(exc), param="messages", code="context_length_exceeded") from None
    except LoraopsError as exc:
        raise APIError(400, str(exc), param="messages") from None


def _messages(request: ChatCompletionRequest, system_prompt: str | None) -> list[Message]:
    """The request's turns as chat-template messages; the system prompt the model trained with when none is given."""
    messages: list[Message] = []
    for i, turn in enumerate(request.messages):
        raw = turn.model_dump(exclude_none=True).get("content")
        try:
            text = content_text(raw, f"messages[{i}].content", allow_empty=turn.role == "assistant")
        except RecordProblem as exc:
            raise APIError(400, str(exc), param=f"messages[{i}].content") from None
        messages.append({"role": "system" if turn.role == "developer" else turn.role, "content": text})
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def _usage(reply: Reply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


class _ReplyEvents(EventSourceResponse):
    """The event stream of one reply, which stops generating when the response ends for any reason.

    Starlette never closes a streamed body it abandons (a client that left), and the garbage collector may
    take seconds to; meanwhile the reply would hold the model.
    """

    def __init__(self, reply: Reply, events: Iterator[bytes]) -> None:
        super().__init__(events)
        self.reply = reply

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.reply.cancel()


def _events(reply: Reply, completion: dict[str, Any], include_usage: bool) -> Iterator[bytes]:
    """chat.completion.chunk events: the role, the text as generated, the finish reason, then [DONE]."""
    base = {**completion, "object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _event({**base, "choices": [choice]})

    yield chunk({"role": "assistant", "content": ""})
    try:
        with closing(reply.stream()) as pieces:  # closed early when the client leaves: generation stops
            for piece in pieces:
                yield chunk({"content": piece})
    except Exception as exc:  # the 200 is sent already: tell the client in the stream, as OpenAI does
        log.exception("generation failed")
        yield _event(
            {"error": {"message": f"generation failed: {exc}", "type": "server_error", "param": None, "code": None}}
        )
        return
    yield chunk({}, reply.finish_reason)
    if include_usage:
        yield _event({**base, "choices": [], "usage": _usage(reply)})
    yield format_sse_event(data_str="[DONE]")


def _event(data: dict[str, Any]) -> bytes:
    return format_sse_event(data_str=json.dumps(data, ensure_ascii=False))


def _param(loc: Any) -> str | None:
    """A validation error's place in OpenAI's spelling: ("body", "messages", 0, "role") -> messages[0].role."""
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc if p != "body"]
    return "".join(parts).lstrip(".") or None


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = dict(exc.errors()[0]) if exc.errors() else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return APIError(
                400, f"The request body is not valid JSON ({first.get('ctx', {}).get('error', '')})"
            ).response()
        param = (first.get("ctx") or {}).get("param") or _param(first.get("loc", ()))
        return APIError(400, f"{param}: {first['msg']}" if param else str(first["msg"]), param=param).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = f"Unknown route: {request.method} {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return APIError(exc.status_code, message).response()

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("request failed: %s: %s", type(exc).__name__, exc)
        return APIError(500, "The server failed to answer; see its log.", "server_error").response()
