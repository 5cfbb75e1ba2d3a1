"""POST /v1/completions: text continued from a prompt (text or token ids, no chat template), with `echo` and
`logprobs` as lm-evaluation-harness's `local-completions` scores log-likelihoods with them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from loraops.inference import ChatModel, Reply, ReplyOptions
from loraops.logprobs import TokenLogprob
from loraops.serve.admission import Admission
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
from loraops.serve.schemas import CompletionRequest
from loraops.serve.tokens import checked_ids


@dataclass
class _Choice:
    """One prompt's completion: its prompt ids, the prompt's scores when echoed with logprobs, and the reply."""

    index: int
    prompt: list[int]
    echoed: list[TokenLogprob | None]
    reply: Reply | None


def completion(model: ChatModel, request: CompletionRequest, admission: Admission) -> dict[str, Any] | ReplyEvents:
    check_request(model, request.n, request.logprobs is not None, "logprobs")
    with admission.slot() as slot:
        choices = [_prepare(model, request, i, prompt) for i, prompt in enumerate(request.prompts())]
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model.name}
        if request.stream:
            replies = [c.reply for c in choices if c.reply]
            return ReplyEvents(replies, _events(model, request, choices, head), slot.hand_over())
        for choice in choices:
            if choice.reply:
                choice.reply.complete()
    body = [_choice(model, request, c, _text(model, request, c)) for c in choices]
    return {**head, "object": "text_completion", "choices": body, "usage": _usage(choices)}


def _prepare(model: ChatModel, request: CompletionRequest, index: int, prompt: str | list[int]) -> _Choice:
    param = "prompt" if isinstance(request.prompt, str) else f"prompt[{index}]"
    run = user_errors(param)
    ids = run(lambda: model.encode_text(prompt)) if isinstance(prompt, str) else checked_ids(model, prompt, param)
    scores: list[TokenLogprob | None] = []
    top = request.logprobs
    if request.echo and top is not None:
        scores = run(lambda: model.score_prompt(ids, top))
    reply = None
    if request.max_tokens > 0:
        sampling = settings(request.temperature, request.top_p, request.max_tokens)
        fit = "max_tokens" not in request.model_fields_set  # OpenAI's default length is cut to fit; an asked one not
        options = ReplyOptions(tuple(request.stop_strings()), request.seed, fit, top)
        reply = run(lambda: model.continuation(ids, sampling, options))
    return _Choice(index, ids, scores, reply)


def _text(model: ChatModel, request: CompletionRequest, choice: _Choice) -> str:
    echoed = model.tokenizer.decode(choice.prompt) if request.echo else ""
    return echoed + (choice.reply.text if choice.reply else "")


def _choice(model: ChatModel, request: CompletionRequest, choice: _Choice, text: str) -> dict[str, Any]:
    reply = choice.reply
    finish = reply.finish_reason if reply else "length"
    logprobs = _logprobs(model, request, choice) if request.logprobs is not None else None
    return {"index": choice.index, "text": text, "logprobs": logprobs, "finish_reason": finish}


def _logprobs(model: ChatModel, request: CompletionRequest, choice: _Choice) -> dict[str, Any]:
    """OpenAI's completion logprobs: tokens, their log-probabilities (None for a prompt's first), the likeliest
    alternatives as {token: logprob}, and where each token starts in the text."""
    decode = model.tokenizer.decode
    items: list[tuple[TokenLogprob | None, str]] = []
    if request.echo:
        items += [(score, decode([token])) for score, token in zip(choice.echoed, choice.prompt)]
    if choice.reply:
        items += list(choice.reply.token_logprobs())
    offsets, at = [], 0
    for _, piece in items:
        offsets.append(at)
        at += len(piece)
    return {
        "tokens": [piece for _, piece in items],
        "token_logprobs": [item.logprob if item else None for item, _ in items],
        "top_logprobs": [{decode([t]): lp for t, lp in item.top} if item else None for item, _ in items],
        "text_offset": offsets,
    }


def _usage(choices: list[_Choice]) -> dict[str, int]:
    generated = sum(c.reply.completion_tokens for c in choices if c.reply)
    return usage(sum(len(c.prompt) for c in choices), generated)


def _events(
    model: ChatModel, request: CompletionRequest, choices: list[_Choice], head: dict[str, Any]
) -> Iterator[bytes]:
    """text_completion events: each prompt's echo and text as generated, its finish reason (with its
    log-probabilities, when asked for), then the usage if asked for, then [DONE]."""
    base = {**head, "object": "text_completion"}

    def chunk(index: int, text: str, finish: str | None = None, logprobs: Any = None) -> bytes:
        return event(
            {**base, "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}]}
        )

    for choice in choices:
        if request.echo:
            yield chunk(choice.index, model.tokenizer.decode(choice.prompt))
        try:
            for piece in streamed(choice.reply) if choice.reply else ():
                yield chunk(choice.index, piece)
        except Exception as exc:
            yield failure_event(exc)
            return
        logprobs = _logprobs(model, request, choice) if request.logprobs is not None else None
        yield chunk(choice.index, "", choice.reply.finish_reason if choice.reply else "length", logprobs)
    if request.include_usage:
        yield event({**base, "choices": [], "usage": _usage(choices)})
    yield DONE
