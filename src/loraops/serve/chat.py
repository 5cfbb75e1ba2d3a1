"""POST /v1/chat/completions: a reply to the conversation, whole or streamed, with log-probabilities if asked."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from loraops import structured
from loraops.data.formats import Message
from loraops.data.messages import RecordProblem, content_text
from loraops.inference import ChatModel, Reply, ReplyOptions
from loraops.logprobs import TokenLogprob
from loraops.serve.admission import Admission
from loraops.serve.errors import APIError
from loraops.serve.replies import (
    DONE,
    ReplyEvents,
    check_request,
    event,
    failure_event,
    settings,
    streamed,
    usage,
    user_errors,
)
from loraops.serve.schemas import ChatCompletionRequest, ResponseFormat


def chat_completion(
    model: ChatModel, request: ChatCompletionRequest, max_new_tokens: int, admission: Admission
) -> dict[str, Any] | ReplyEvents:
    check_request(model, request.n, request.logprobs, "logprobs")
    with admission.slot() as slot:
        reply = _reply(model, request, max_new_tokens)
        completion = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model.name}
        if request.stream:
            return ReplyEvents([reply], _events(reply, completion, request.include_usage), slot.hand_over())
        reply.complete()
    message = {"role": "assistant", "content": reply.text}
    choice = {"index": 0, "message": message, "logprobs": _logprobs(reply), "finish_reason": reply.finish_reason}
    return {
        **completion,
        "object": "chat.completion",
        "choices": [choice],
        "usage": usage(reply.prompt_tokens, reply.completion_tokens),
    }


def _reply(model: ChatModel, request: ChatCompletionRequest, max_new_tokens: int) -> Reply:
    limit = request.max_completion_tokens or request.max_tokens or max_new_tokens
    # A reply length the client asked for is honoured or refused; the server's default is cut to fit.
    fit = request.max_completion_tokens is None and request.max_tokens is None
    messages = _messages(request, model.system_prompt)
    grammar = _grammar(model, request.response_format)
    options = ReplyOptions(tuple(request.stop_strings()), request.seed, fit, request.logprobs_top, grammar)
    sampling = settings(request.temperature, request.top_p, limit)
    return user_errors("messages")(lambda: model.reply(messages, sampling, options))


def _grammar(model: ChatModel, response_format: ResponseFormat | None) -> Any:
    """The compiled grammar a JSON response format holds the reply to; None for text."""
    if response_format is None or response_format.type == "text":
        return None
    if not model.supports_grammars:
        raise APIError(400, "response_format: JSON output is not available with this engine", param="response_format")
    if not structured.available():
        raise APIError(
            400,
            f"response_format: JSON output needs xgrammar on the server ({structured.INSTALL})",
            param="response_format",
        )
    spec = response_format.json_schema
    if spec is None:
        return model.grammars.json(None)
    param = "response_format.json_schema.schema"
    return user_errors(param)(lambda: model.grammars.json(spec.schema_, strict=spec.strict is not False))


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


def _logprobs(reply: Reply) -> dict[str, Any] | None:
    """OpenAI's chat logprobs: each token of the answer, its log-probability and the likeliest alternatives."""
    if reply.recorder is None:
        return None
    decode = reply.model.tokenizer.decode
    return {"content": [_token(item, piece, decode) for item, piece in reply.token_logprobs()], "refusal": None}


def _token(item: TokenLogprob, piece: str, decode: Any) -> dict[str, Any]:
    top = [_alternative(decode([token_id]), logprob) for token_id, logprob in item.top]
    return {**_alternative(piece, item.logprob), "top_logprobs": top}


def _alternative(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def _events(reply: Reply, completion: dict[str, Any], include_usage: bool) -> Iterator[bytes]:
    """chat.completion.chunk events: the role, the text as generated, the finish reason (with the log-probabilities
    of the whole answer, when asked for), then [DONE]."""
    base = {**completion, "object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, logprobs: Any = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return event({**base, "choices": [choice]})

    yield chunk({"role": "assistant", "content": ""})
    try:
        for piece in streamed(reply):
            yield chunk({"content": piece})
    except Exception as exc:
        yield failure_event(exc)
        return
    yield chunk({}, reply.finish_reason, _logprobs(reply))
    if include_usage:
        yield event({**base, "choices": [], "usage": usage(reply.prompt_tokens, reply.completion_tokens)})
    yield DONE
