#!/usr/bin/env python3
"""`loraops serve` under concurrent clients: dynamic batching against one request at a time, side by side.

The server runs in this process on 127.0.0.1 (the default model unless --model), once with batching
(--max-batch, default 8) and once with batches of one; for 1, 4 and 8 concurrent clients, each sending
--requests greedy chat requests of --max-tokens, it reports generated tokens per second and the ratio of the
two (machines are noisy: compare the ratio, measured in the same run), and checks that every answer equals
the answer the request gets alone.

    .venv/bin/python bench/serve_speed.py [--model default] [--clients 1,4,8] [--requests 2] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from loraops.inference import ChatModel
from loraops.serve.app import create_app
from loraops.serve.limits import Limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support import serving  # noqa: E402  (the tests' in-process uvicorn helper)

QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "Write a haiku about spreadsheets.",
    "Explain what a rolling sum is.",
    "Give two uses of a hash map.",
    "What is 12 times 12?",
    "Describe the sky at night.",
    "Why do leaves change colour?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--requests", type=int, default=2, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=8)
    args = parser.parse_args()
    model = ChatModel.load(args.model)
    counts = [int(c) for c in args.clients.split(",")]
    expected = _alone(model, args.max_tokens)
    print(f"{model.name}: greedy chat requests of {args.max_tokens} tokens, {args.requests} per client")
    ceiling = _ceiling(model, args.max_batch, args.max_tokens)
    print(
        f"  the model alone, every row generating {args.max_tokens} tokens: a batch of {args.max_batch} "
        f"{ceiling:.2f}x the tokens per second of one prompt (the most batching can give here)",
        flush=True,
    )
    for clients in counts:
        rates = {}
        for batch in (1, args.max_batch):
            rate, answers = _throughput(model, batch, clients, args.requests, args.max_tokens)
            rates[batch] = rate
            same = all(answers[q] == expected[q] for q in answers)
            print(f"  {clients} clients, max_batch {batch}: {rate:6.1f} tokens/s  answers as alone: {same}", flush=True)
        print(f"  {clients} clients: batching {rates[args.max_batch] / rates[1]:.2f}x one at a time", flush=True)


def _ceiling(model: ChatModel, batch: int, max_tokens: int) -> float:
    """Tokens per second of `generate` on `batch` prompts over one prompt, every row generating `max_tokens`."""
    import torch

    from loraops.data.tokenize import tokenize_prompt

    prompts = [tokenize_prompt(model.tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]
    prompts = [prompts[i % len(prompts)] for i in range(batch)]
    pad, width = model.stops[0], max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    forced = {"max_new_tokens": max_tokens, "min_new_tokens": max_tokens, "do_sample": False, "pad_token_id": pad}
    rates = []
    with torch.inference_mode():
        model.model.generate(ids[:1, width - len(prompts[0]) :], **{**forced, "max_new_tokens": 4, "min_new_tokens": 4})
        for rows, mask_rows in ((ids[:1, width - len(prompts[0]) :], None), (ids, mask)):
            started = time.perf_counter()
            model.model.generate(rows, attention_mask=mask_rows, **forced)
            rates.append(rows.shape[0] * max_tokens / (time.perf_counter() - started))
    return rates[1] / rates[0]


def _alone(model: ChatModel, max_tokens: int) -> dict[str, str]:
    app = create_app(model, limits=Limits(max_batch=1))
    with serving(app) as url:
        client = _client(url)
        return {q: _ask(client, model.name, q, max_tokens)[0] for q in QUESTIONS}


def _throughput(
    model: ChatModel, batch: int, clients: int, requests: int, max_tokens: int
) -> tuple[float, dict[str, str]]:
    app = create_app(model, limits=Limits(max_batch=batch))
    with serving(app) as url:
        client = _client(url)
        _ask(client, model.name, QUESTIONS[0], 4)  # untimed: first-call work is not serving

        def work(c: int) -> list[tuple[str, str, int]]:
            asked = [QUESTIONS[(c + r * clients) % len(QUESTIONS)] for r in range(requests)]
            return [(q, *_ask(client, model.name, q, max_tokens)) for q in asked]

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            done = [item for items in pool.map(work, range(clients)) for item in items]
        seconds = time.perf_counter() - started
    return sum(tokens for _, _, tokens in done) / seconds, {q: text for q, text, _ in done}


def _client(url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)


def _ask(client: Any, model: str, question: str, max_tokens: int) -> tuple[str, int]:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=max_tokens, temperature=0
    )
    return reply.choices[0].message.content or "", reply.usage.completion_tokens


if __name__ == "__main__":
    main()
