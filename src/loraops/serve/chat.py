"""POST /v1/chat/completions: a reply to the conversation, whole or streamed, with log-probabilities if asked."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from loraops.data.formats import Message
from loraops.data.messages import RecordProblem, content_text, openai_turn, uses_tools
from loraops.inference import STOP, ChatModel, Reply, ReplyOptions
from loraops.logprobs import TokenLogprob
from loraops.serve.admission import Admission
from loraops.serve.errors import APIError
from loraops.serve.replies import (
    DONE,
    ReplyEvents,
    check_request,
    event,
    failure_event,
    grammar_engine,
    settings,
    streamed,
    usage,
    user_errors,
)
from loraops.serve.schemas import ChatCompletionRequest, ResponseFormat
from loraops.serve.tools import tool_offer
from loraops.tool_calls import CallReader, ToolCall


def chat_completion(
    model: ChatModel, request: ChatCompletionRequest, max_new_tokens: int, admission: Admission
) -> dict[str, Any] | ReplyEvents:
    check_request(model, request.n, request.logprobs, "logprobs")
    with admission.slot() as slot:
        reply, reader = _reply(model, request, max_new_tokens)
        completion = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model.name}
        if request.stream:
            events = _events(reply, reader, completion, request.include_usage)
            return ReplyEvents([reply], events, slot.hand_over())
        reply.complete()
    message = {"role": "assistant", "content": reply.text}
    if reader is not None:
        reader.feed(reply.text)
        reader.finish()
        message = reader.message()
    choice = {
        "index": 0,
        "message": message,
        "logprobs": _logprobs(reply),
        "finish_reason": _finish_reason(reply, reader),
    }
    return {
        **completion,
        "object": "chat.completion",
        "choices": [choice],
        "usage": usage(reply.prompt_tokens, reply.completion_tokens),
    }


def _reply(model: ChatModel, request: ChatCompletionRequest, max_new_tokens: int) -> tuple[Reply, CallReader | None]:
    """The reply, not generated yet, and the reader of the tool calls it may write (None without tools)."""
    limit = request.max_completion_tokens or request.max_tokens or max_new_tokens
    # A reply length the client asked for is honoured or refused; the server's default is cut to fit.
    fit = request.max_completion_tokens is None and request.max_tokens is None
    messages = _messages(request, model.system_prompt)
    offer = tool_offer(model, request, uses_tools(messages))
    grammar = offer.grammar if offer else _grammar(model, request.response_format)
    stops = tuple(request.stop_strings()) + (offer.stops if offer else ())
    options = ReplyOptions(stops, request.seed, fit, request.logprobs_top, grammar)
    sampling = settings(request.temperature, request.top_p, limit)
    tools = offer.tools if offer else None
    reply: Reply = user_errors("messages")(lambda: model.reply(messages, sampling, options, tools))
    return reply, offer.reader(model, reply) if offer else None


def _finish_reason(reply: Reply, reader: CallReader | None) -> str | None:
    """OpenAI's reasons, with `tool_calls` for a reply that ended with calls to make."""
    return "tool_calls" if reader is not None and reader.calls and reply.finish_reason == STOP else reply.finish_reason


def _grammar(model: ChatModel, response_format: ResponseFormat | None) -> Any:
    """The compiled grammar a JSON response format holds the reply to; None for text."""
    if response_format is None or response_format.type == "text":
        return None
    grammar_engine(model, "response_format", "JSON output")
    spec = response_format.json_schema
    if spec is None:
        return model.grammars.json(None)
    param = "response_format.json_schema.schema"
    return user_errors(param)(lambda: model.grammars.json(spec.schema_, strict=spec.strict is not False))


def _messages(request: ChatCompletionRequest, system_prompt: str | None) -> list[Message]:
    """The request's turns as chat-template messages (tool calls and results included); the system prompt the
    model trained with when none is given."""
    messages: list[Message] = []
    for i, turn in enumerate(request.messages):
        item = turn.model_dump(exclude_none=True)
        item["role"] = "system" if turn.role == "developer" else turn.role
        if turn.role == "assistant":
            item.setdefault("content", "")
        try:
            content_text(item.get("content"), f"messages[{i}].content")
        except RecordProblem as exc:
            raise APIError(400, str(exc), param=f"messages[{i}].content") from None
        try:
            messages.append(openai_turn(item, f"messages[{i}]"))
        except RecordProblem as exc:  # its tool calls
            raise APIError(400, str(exc), param=f"messages[{i}]") from None
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


def _events(
    reply: Reply, reader: CallReader | None, completion: dict[str, Any], include_usage: bool
) -> Iterator[bytes]:
    """chat.completion.chunk events: the role, the answer as generated (tool calls as each is complete, its name
    then its arguments, as OpenAI sends them), the finish reason (with the log-probabilities of the whole
    answer, when asked for), then [DONE]."""
    base = {**completion, "object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, logprobs: Any = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return event({**base, "choices": [choice]})

    def pieces(text: str, calls: list[ToolCall]) -> Iterator[bytes]:
        if text:
            yield chunk({"content": text})
        first = len(reader.calls) - len(calls) if reader else 0  # calls are numbered across the whole reply
        for index, call in enumerate(calls, start=first):
            header = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            yield chunk({"tool_calls": [header]})
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": call.arguments}}]})

    yield chunk({"role": "assistant", "content": ""})
    try:
        for piece in streamed(reply):
            yield from pieces(*reader.feed(piece)) if reader else pieces(piece, [])
        if reader is not None:
            yield from pieces(*reader.finish())
    except Exception as exc:
        yield failure_event(exc)
        return
    yield chunk({}, _finish_reason(reply, reader), _logprobs(reply))
    if include_usage:
        yield event({**base, "choices": [], "usage": usage(reply.prompt_tokens, reply.completion_tokens)})
    yield DONE
