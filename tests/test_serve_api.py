"""The OpenAI API surface of `loraops serve` beyond plain chat: every field honoured or refused, log-probabilities
checked against teacher forcing, /v1/completions as lm-evaluation-harness uses it, and the server's limits."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import openai
import pytest
from pydantic import BaseModel
from support import make_run, serving

from loraops.data.tokenize import tokenize_prompt
from loraops.eval.generate import GenerationSettings
from loraops.inference import ChatModel, ReplyOptions
from loraops.serve.app import create_app
from loraops.serve.limits import Limits

USER = [{"role": "user", "content": "Rolling sum of A1:A5"}]


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_adapter_dir: Path) -> ChatModel:
    run = make_run(tmp_path_factory.mktemp("runs"), "r1", model_name=str(tiny_model_dir), adapter_dir=tiny_adapter_dir)
    return ChatModel.load(str(run))


@pytest.fixture(scope="module")
def base_url(chat_model: ChatModel) -> Iterator[str]:
    with serving(create_app(chat_model, max_new_tokens=8)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=120)


def _post(url: str, body: Any = None, method: str = "POST", headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json", **(headers or {})}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _teacher_forced(model: ChatModel, prompt: list[int], tokens: list[int]) -> list[float]:
    """Each token's log-probability given the prompt and the tokens before it, by one forward pass."""
    import torch

    ids = torch.tensor([prompt + tokens])
    with torch.inference_mode():
        logprobs = torch.log_softmax(model.model(input_ids=ids).logits[0].float(), dim=-1)
    return [float(logprobs[len(prompt) + i - 1, t]) for i, t in enumerate(tokens)]


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"frequency_penalty": 0.5}, "frequency_penalty", "not supported"),
        ({"presence_penalty": -1}, "presence_penalty", "not supported"),
        ({"logit_bias": {"50": 10}}, "logit_bias", "not supported"),
        ({"response_format": {"type": "yaml"}}, "response_format.type", "'text', 'json_object' or 'json_schema'"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "only then"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "renders no tools"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice", "not among"),
        ({"functions": [{"name": "f"}]}, "functions", "not supported"),
        ({"modalities": ["text", "audio"]}, "modalities", "text only"),
        ({"reasoning_effort": "high"}, "reasoning_effort", "not supported"),
        ({"top_logprobs": 2}, "top_logprobs", "logprobs: true"),
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs", "20"),
        ({"best_answer": True}, "best_answer", "Unrecognized request argument supplied: best_answer"),
    ],
)
def test_a_field_that_would_change_the_answer_is_refused_by_name(
    client: openai.OpenAI, chat_model: ChatModel, extra: dict[str, Any], param: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/chat/completions", body={"model": chat_model.name, "messages": USER, **extra}, cast_to=object)
    error = caught.value.response.json()["error"]
    assert error["param"] == param and words in error["message"] and error["type"] == "invalid_request_error"


def test_fields_that_cannot_change_the_answer_are_accepted(client: openai.OpenAI, chat_model: ChatModel) -> None:
    reply = client.chat.completions.create(
        model=chat_model.name,
        messages=USER,  # type: ignore[arg-type]
        max_tokens=2,
        user="u-1",
        metadata={"team": "dsl"},
        store=False,
        frequency_penalty=0,
        response_format={"type": "text"},
        tool_choice="none",
    )
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_chat_logprobs_are_the_models_own_by_teacher_forcing(client: openai.OpenAI, chat_model: ChatModel) -> None:
    asked = {"model": chat_model.name, "messages": USER, "max_tokens": 6, "temperature": 0.7, "seed": 3}
    reply = client.chat.completions.create(**asked, logprobs=True, top_logprobs=3)  # type: ignore[call-overload]
    content = reply.choices[0].logprobs.content
    # The same reply through the core gives the token ids; one forward pass over them gives their log-probabilities.
    prompt = tokenize_prompt(chat_model.tokenizer, USER)  # type: ignore[arg-type]
    core = chat_model.continuation(prompt, GenerationSettings.sampling(6, 0.7), ReplyOptions(seed=3, logprobs=0))
    assert core.complete() == reply.choices[0].message.content
    pairs = core.token_logprobs()
    assert [p for _, p in pairs] == [c.token for c in content] and "".join(c.token for c in content) == core.text
    expected = _teacher_forced(chat_model, prompt, [item.token_id for item, _ in pairs])
    assert [c.logprob for c in content] == pytest.approx(expected, abs=1e-4)
    for c in content:
        assert len(c.top_logprobs) == 3 and c.top_logprobs[0].logprob >= c.logprob - 1e-6
        assert c.bytes == list(c.token.encode())

    chunks = list(client.chat.completions.create(**asked, logprobs=True, top_logprobs=3, stream=True))  # type: ignore[call-overload]
    streamed = [
        t for chunk in chunks if chunk.choices and chunk.choices[0].logprobs for t in chunk.choices[0].logprobs.content
    ]
    assert [(t.token, t.logprob) for t in streamed] == [(c.token, c.logprob) for c in content]


def test_completions_continue_text_and_token_ids(client: openai.OpenAI, chat_model: ChatModel) -> None:
    text = client.completions.create(model=chat_model.name, prompt="The sky is", max_tokens=5, temperature=0)
    ids = chat_model.encode_text("The sky is")
    assert text.choices[0].text == chat_model.continuation(ids, GenerationSettings.sampling(5)).complete()
    assert text.object == "text_completion" and text.usage.prompt_tokens == len(ids)

    two = client.completions.create(model=chat_model.name, prompt=[ids, ids[:2]], max_tokens=3, temperature=0)
    assert [c.index for c in two.choices] == [0, 1] and two.choices[0].text == text.choices[0].text[
        : len(two.choices[0].text)
    ]

    pieces = client.completions.create(
        model=chat_model.name, prompt="The sky is", max_tokens=5, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in pieces if c.choices) == text.choices[0].text

    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=chat_model.name, prompt=[[1, 10**9]], max_tokens=1)
    assert "not in this model's vocabulary" in caught.value.message


def test_echoed_prompt_logprobs_are_teacher_forced(client: openai.OpenAI, chat_model: ChatModel) -> None:
    ids = chat_model.encode_text("one two three four")
    scored = client.completions.create(model=chat_model.name, prompt=ids, max_tokens=0, echo=True, logprobs=2)
    logprobs = scored.choices[0].logprobs
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert logprobs.token_logprobs[1:] == pytest.approx(_teacher_forced(chat_model, ids[:1], ids[1:]), abs=1e-4)
    assert "".join(logprobs.tokens) == scored.choices[0].text == chat_model.tokenizer.decode(ids)
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(ids))]
    assert all(len(top) <= 2 for top in logprobs.top_logprobs[1:])

    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=chat_model.name, prompt="x", max_tokens=0)
    assert caught.value.body["param"] == "max_tokens"  # type: ignore[index]


def test_logprobs_are_refused_where_the_engine_has_none(
    client: openai.OpenAI, chat_model: ChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_model, "supports_logprobs", False)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=chat_model.name, messages=USER, logprobs=True)  # type: ignore[arg-type]
    assert caught.value.body["param"] == "logprobs"  # type: ignore[index]


def test_tokenizer_routes_and_health(base_url: str, chat_model: ChatModel) -> None:
    root = base_url.removesuffix("/v1")
    status, body = _post(f"{root}/tokenize", {"prompt": "The sky", "add_special_tokens": False})
    assert status == 200 and body["tokens"] == chat_model.tokenizer("The sky", add_special_tokens=False)["input_ids"]
    assert _post(f"{root}/detokenize", {"tokens": body["tokens"]}) == (200, {"prompt": "The sky"})
    status, info = _post(f"{root}/tokenizer_info", method="GET")
    assert status == 200 and info["eos_token"] == chat_model.tokenizer.eos_token and info["chat_template"]
    assert _post(f"{root}/health", method="GET") == (200, {"status": "ok", "model": chat_model.name})
    status, models = _post(f"{base_url}/models", method="GET")
    assert models["data"][0]["max_model_len"] == chat_model.context_length


def test_limits_body_queue_and_cors(chat_model: ChatModel) -> None:
    app = create_app(
        chat_model, "k3y", limits=Limits(max_body_bytes=2000, max_queue=0, max_batch=1), cors_origins=["http://ui.test"]
    )
    key = {"Authorization": "Bearer k3y"}
    with serving(app) as url:
        status, body = _post(
            f"{url}/chat/completions", {"model": chat_model.name, "messages": USER, "x": "y" * 3000}, headers=key
        )
        assert status == 413 and body["error"]["code"] == "request_too_large"
        chunked = http.client.HTTPConnection(*url.split("/")[2].split(":"))
        big = json.dumps({"model": chat_model.name, "prompt": "x" * 3000}).encode()
        parts = (big[i : i + 500] for i in range(0, len(big), 500))  # no Content-Length: counted as it arrives
        chunked.request(
            "POST", "/v1/completions", parts, {**key, "Content-Type": "application/json"}, encode_chunked=True
        )
        assert chunked.getresponse().status == 413
        assert _post(url.removesuffix("/v1") + "/health", method="GET")[0] == 200  # no key needed to see it is up

        client = openai.OpenAI(base_url=url, api_key="k3y", max_retries=0)
        held = client.chat.completions.create(model=chat_model.name, messages=USER, max_tokens=200, stream=True)  # type: ignore[arg-type]
        next(iter(held))  # the one request the model answers; the queue holds none
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model=chat_model.name, messages=USER, max_tokens=1)  # type: ignore[arg-type]
        assert caught.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
        held.close()

        preflight = {"Origin": "http://ui.test", "Access-Control-Request-Method": "POST"}
        request = urllib.request.Request(f"{url}/chat/completions", headers=preflight, method="OPTIONS")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["access-control-allow-origin"] == "http://ui.test"
        other = {**preflight, "Origin": "http://evil.test"}
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(urllib.request.Request(f"{url}/chat/completions", headers=other, method="OPTIONS"))


MC_DOCS = [
    {"question": "Rolling sum of A1:A5 is", "choices": ["=FLOWROLL(A1:A5, 2)", "=SUM(A1)", "blue"], "answer": 0},
    {"question": "The sky is", "choices": ["blue", "green", "=PEAKSHIFT(G1:G4, 3)"], "answer": 0},
    {"question": "Two plus two is", "choices": ["four", "five", "seven"], "answer": 0},
    {"question": "A spreadsheet holds", "choices": ["cells", "fish", "clouds"], "answer": 0},
]


@pytest.mark.slow  # lm-eval imports and builds its task registry: about 10 s
def test_lm_eval_local_completions_scores_log_likelihoods(base_url: str, chat_model: ChatModel, tmp_path: Path) -> None:
    """lm-evaluation-harness's `local-completions` runs a multiple-choice task against the server, tokenizing
    through its /tokenize route; each choice's log-likelihood is the model's own, by teacher forcing."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(d) + "\n" for d in MC_DOCS))
    (tmp_path / "tiny_mc.yaml").write_text(
        "task: tiny_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'mc.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    results = simple_evaluate(
        model="local-completions",
        model_args={"base_url": f"{base_url}/completions", "model": chat_model.name, "num_concurrent": 1},
        tasks=["tiny_mc"],
        task_manager=TaskManager(include_path=str(tmp_path)),
        log_samples=True,
    )
    assert results is not None
    scored = [[float(r[0][0]) for r in sample["resps"]] for sample in results["samples"]["tiny_mc"]]
    expected = [[_choice_loglik(chat_model, d["question"], " " + c) for c in d["choices"]] for d in MC_DOCS]
    assert [s for doc in scored for s in doc] == pytest.approx([e for doc in expected for e in doc], abs=1e-3)
    accuracy = sum(max(range(3), key=doc.__getitem__) == 0 for doc in expected) / len(MC_DOCS)
    assert results["results"]["tiny_mc"]["acc,none"] == pytest.approx(accuracy)


def _choice_loglik(model: ChatModel, context: str, continuation: str) -> float:
    """The sum of the continuation's token log-probabilities, split from the whole text as lm-eval splits it."""
    encode = model.tokenizer
    context_ids = encode(context, add_special_tokens=False)["input_ids"]
    whole = encode(context + continuation, add_special_tokens=False)["input_ids"]
    return sum(_teacher_forced(model, context_ids, whole[len(context_ids) :]))


def test_langchain_and_litellm_talk_to_the_server(
    base_url: str, chat_model: ChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clients agent frameworks are built on send only fields the server honours or accepts."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm fetches its price list from GitHub otherwise
    import litellm
    from langchain_openai import ChatOpenAI

    expected = (
        openai.OpenAI(base_url=base_url, api_key="none")
        .chat.completions.create(
            model=chat_model.name,
            messages=USER,
            max_tokens=4,
            temperature=0,  # type: ignore[arg-type]
        )
        .choices[0]
        .message.content
    )
    chat = ChatOpenAI(base_url=base_url, api_key="none", model=chat_model.name, max_tokens=4, temperature=0)  # type: ignore[arg-type]
    assert chat.invoke(USER[0]["content"]).content == expected
    assert "".join(str(c.content) for c in chat.stream(USER[0]["content"])) == expected
    kwargs = {
        "model": f"openai/{chat_model.name}",
        "api_base": base_url,
        "api_key": "none",
        "max_tokens": 4,
        "temperature": 0,
    }
    assert litellm.completion(messages=USER, **kwargs).choices[0].message.content == expected
    text = litellm.text_completion(prompt="The sky is", **kwargs).choices[0].text
    assert (
        text == chat_model.continuation(chat_model.encode_text("The sky is"), GenerationSettings.sampling(4)).complete()
    )


class Verdict(BaseModel):
    """What the structured-output tests ask for: choices only, so even a random tiny model ends its JSON."""

    answer: Literal["yes", "no"]
    sure: bool


def test_structured_output_parses_with_openai_and_langchain(client: openai.OpenAI, chat_model: ChatModel) -> None:
    """A random tiny model answers valid JSON only because decoding allows nothing else."""
    from langchain_openai import ChatOpenAI

    free = client.chat.completions.create(model=chat_model.name, messages=USER, max_tokens=30, temperature=0)  # type: ignore[arg-type]
    assert not free.choices[0].message.content.startswith("{")  # unconstrained, it says something else
    parsed = client.chat.completions.parse(
        model=chat_model.name,
        messages=USER,
        response_format=Verdict,
        max_tokens=30,
        temperature=0,  # type: ignore[arg-type]
    )
    assert isinstance(parsed.choices[0].message.parsed, Verdict)
    anything = client.chat.completions.create(
        model=chat_model.name,
        messages=USER,
        response_format={"type": "json_object"},
        max_tokens=60,
        temperature=1.0,
        seed=1,  # type: ignore[arg-type]
    )
    if anything.choices[0].finish_reason == "stop":  # a JSON object, unless cut at max_tokens
        assert isinstance(json.loads(anything.choices[0].message.content or ""), dict)
    else:
        assert anything.choices[0].message.content.startswith("{")

    chat = ChatOpenAI(
        base_url=str(client.base_url), api_key="none", model=chat_model.name, max_tokens=30, temperature=0
    )  # type: ignore[arg-type]
    verdict = chat.with_structured_output(Verdict, method="json_schema").invoke(USER[0]["content"])
    assert isinstance(verdict, Verdict) and verdict == parsed.choices[0].message.parsed


def test_structured_output_is_refused_where_it_cannot_be_kept(
    client: openai.OpenAI, chat_model: ChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "frob"}}}},
    }
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=chat_model.name, messages=USER, response_format=bad)  # type: ignore[arg-type]
    assert caught.value.body["param"] == "response_format.json_schema.schema"  # type: ignore[index]
    import loraops.structured

    monkeypatch.setattr(loraops.structured, "available", lambda: False)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=chat_model.name, messages=USER, response_format={"type": "json_object"})  # type: ignore[arg-type]
    assert "loraops[structured]" in caught.value.message
    monkeypatch.setattr(chat_model, "supports_grammars", False)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=chat_model.name, messages=USER, response_format={"type": "json_object"})  # type: ignore[arg-type]
    assert "not available with this engine" in caught.value.message


def test_concurrent_requests_are_batched_and_answer_as_alone(
    client: openai.OpenAI, chat_model: ChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight mixed requests at once: greedy ones of different prompts, lengths and stop strings share a batch
    (streamed or not, with log-probabilities or not); sampled ones with a seed go alone. Each answer equals
    the answer the request gets on its own."""
    import loraops.inference

    batches: list[int] = []
    real = loraops.inference.generate_batch
    monkeypatch.setattr(
        loraops.inference, "generate_batch", lambda chat, jobs: batches.append(len(jobs)) or real(chat, jobs)
    )
    prompts = ["Rolling sum of A1:A5", "hi", "one two three four five six seven", "The sky", "x", "Peak shift"]
    asks: list[dict[str, Any]] = [
        {"content": p, "max_tokens": 3 + 2 * i, "temperature": 0, "stop": ["e"] if i == 2 else None}
        for i, p in enumerate(prompts)
    ]
    asks[1]["logprobs"] = True
    asks += [
        {"content": "seeded", "max_tokens": 5, "temperature": 1.0, "seed": 7},
        {"content": "z", "max_tokens": 4, "temperature": 0.8, "seed": 9},
    ]

    def ask(i: int) -> tuple[str, int, list[float]]:
        a = dict(asks[i])
        messages = [{"role": "user", "content": a.pop("content")}]
        if i % 2:  # odd ones streamed
            usage = {"include_usage": True}
            stream = client.chat.completions.create(
                model=chat_model.name,
                messages=messages,
                stream=True,
                stream_options=usage,
                **a,  # type: ignore[call-overload]
            )
            chunks = list(stream)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            logprobs = [
                t.logprob for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content
            ]
            return text, chunks[-1].usage.completion_tokens, logprobs
        reply = client.chat.completions.create(model=chat_model.name, messages=messages, **a)  # type: ignore[call-overload]
        found = reply.choices[0].logprobs
        logprobs = [t.logprob for t in found.content] if found else []
        return reply.choices[0].message.content or "", reply.usage.completion_tokens, logprobs

    chat_model.enable_batching(Limits().max_batch)  # as create_app set it (another test's app served it alone)
    alone = [ask(i) for i in range(len(asks))]
    batches.clear()
    # A long reply holds the model while all eight arrive (however slowly this machine sends them), as a
    # busy server's queue does; then it leaves, and the waiting requests go in batches.
    held = client.chat.completions.create(model=chat_model.name, messages=USER, max_tokens=100, stream=True)  # type: ignore[arg-type]
    next(iter(held))
    with ThreadPoolExecutor(len(asks)) as pool:
        futures = [pool.submit(ask, i) for i in range(len(asks))]
        assert chat_model.batcher is not None
        while chat_model.batcher.waiting < len(asks):
            time.sleep(0.01)
        held.close()
        together = [f.result() for f in futures]
    assert [(text, tokens) for text, tokens, _ in together] == [(text, tokens) for text, tokens, _ in alone]
    assert together[1][2] == pytest.approx(alone[1][2], abs=1e-4) and len(alone[1][2]) > 0
    assert sorted(batches) == [6]  # the greedy ones shared one generate call; the seeded ones went alone
