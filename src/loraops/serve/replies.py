"""From a request to the generation core and back: sampling settings, the model's reply, usage counts, and
the event stream a streamed reply is sent as (server-sent events ending with [DONE], as OpenAI sends them)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

from fastapi.sse import EventSourceResponse, format_sse_event

from loraops import structured
from loraops.errors import LoraopsError
from loraops.eval.generate import GenerationSettings
from loraops.inference import ChatModel, PromptTooLong, Reply
from loraops.serve.errors import APIError

log = logging.getLogger(__name__)


def settings(temperature: float | None, top_p: float | None, max_new_tokens: int) -> GenerationSettings:
    """OpenAI's defaults: temperature 1 and top_p 1; temperature 0 is greedy."""
    return GenerationSettings.sampling(max_new_tokens, 1.0 if temperature is None else temperature, top_p or 1.0)


def check_request(model: ChatModel, n: int, logprobs: bool, param: str) -> None:
    if n != 1:
        raise APIError(
            400,
            f"n={n}: this server generates one choice per request; send n=1 (or leave "
            "it out) and repeat the request for more.",
            param="n",
        )
    if logprobs and not model.supports_logprobs:
        raise APIError(400, f"{param}: log-probabilities are not available with this engine", param=param)


def grammar_engine(model: ChatModel, param: str, what: str) -> None:
    """Refuse, naming `param`, what needs constrained decoding where the engine or xgrammar lacks it."""
    if not model.supports_grammars:
        raise APIError(400, f"{param}: {what} is not available with this engine", param=param)
    if not structured.available():
        raise APIError(400, f"{param}: {what} needs xgrammar on the server ({structured.INSTALL})", param=param)


def user_errors(param: str) -> Callable[[Callable[[], Any]], Any]:
    """Run `make`, answering a prompt too long for the context or one the model refuses as a 400."""

    def run(make: Callable[[], Any]) -> Any:
        try:
            return make()
        except PromptTooLong as exc:
            raise APIError(400, str(exc), param=param, code="context_length_exceeded") from None
        except LoraopsError as exc:
            raise APIError(400, str(exc), param=param) from None

    return run


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class ReplyEvents(EventSourceResponse):
    """The event stream of replies, which stops generating and frees the request's place in the queue when the
    response ends for any reason.

    Starlette never closes a streamed body it abandons (a client that left), and the garbage collector may
    take seconds to; meanwhile the reply would hold the model.
    """

    def __init__(self, replies: list[Reply], events: Iterator[bytes], done: Callable[[], None]) -> None:
        super().__init__(events)
        self.replies, self.done = replies, done

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for reply in self.replies:
                reply.cancel()
            self.done()


def streamed(reply: Reply) -> Iterator[str]:
    """The reply's text pieces as generated; the stream is closed early when the client leaves."""
    with closing(reply.stream()) as pieces:
        yield from pieces


def failure_event(exc: Exception) -> bytes:
    """A failure after the 200 was sent: told in the stream, as OpenAI does."""
    log.exception("generation failed")
    return event(
        {"error": {"message": f"generation failed: {exc}", "type": "server_error", "param": None, "code": None}}
    )


def event(data: dict[str, Any]) -> bytes:
    return format_sse_event(data_str=json.dumps(data, ensure_ascii=False))


DONE = format_sse_event(data_str="[DONE]")
