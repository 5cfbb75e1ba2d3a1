"""`loraops serve`: the OpenAI-compatible server on 127.0.0.1, spoken to with the official `openai` client."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
from support import make_run, serving

from loraops.data.tokenize import tokenize_prompt
from loraops.eval.generate import GenerationSettings
from loraops.inference import ChatModel, ReplyOptions, StopScanner
from loraops.serve.app import create_app
from loraops.serve.command import API_KEY_ENV
from loraops.serve.limits import MIB, Limits

KEY = "lk-" + "CanaryServeKey0123456789abcdef"  # split: no key-shaped literal in git
ERROR_FIELDS = {"message", "type", "param", "code"}


LONG_CONTEXT = 131_072


@pytest.fixture(scope="module")
def long_context_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model with a 128k-token context, as recent models have: a long reply fits, a prompt of
    megabytes does not."""
    folder = tmp_path_factory.mktemp("long-context") / "model"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": LONG_CONTEXT}))
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, long_context_model_dir: Path, tiny_adapter_dir: Path) -> Path:
    return make_run(
        tmp_path_factory.mktemp("runs"),
        "2026-02-03_04-05-06",
        model_name=str(long_context_model_dir),
        adapter_dir=tiny_adapter_dir,
    )


@pytest.fixture(scope="module")
def chat_model(run_dir: Path) -> ChatModel:
    return ChatModel.load(str(run_dir))


@pytest.fixture(scope="module")
def base_url(chat_model: ChatModel) -> Iterator[str]:
    with serving(create_app(chat_model, max_new_tokens=16)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=120)


def _ask(client: openai.OpenAI, model: str, prompt: str, seed: int = 0, **kwargs: Any) -> Any:
    """Sampled with a seed: the tiny random model's greedy answer is one token repeated whatever the prompt,
    while its seeded samples are words that differ from prompt to prompt, and repeat exactly."""
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=1.0, seed=seed, **kwargs
    )


def _ask_streamed(client: openai.OpenAI, model: str, prompt: str, **kwargs: Any) -> tuple[str, str | None, list[Any]]:
    chunks = list(_ask(client, model, prompt, stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = next((c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason), None)
    return text, finish, chunks


def _raw(base_url: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """Status and JSON body of a request made without the openai client, to see the exact shape."""
    request = urllib.request.Request(
        base_url + path, data=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# --- happy paths ------------------------------------------------------------------------------------


def test_models_lists_the_run_name(client: openai.OpenAI, run_dir: Path) -> None:
    assert [m.id for m in client.models.list()] == [run_dir.name]
    assert client.models.retrieve(run_dir.name).id == run_dir.name


def test_completion_is_the_models_answer(client: openai.OpenAI, chat_model: ChatModel) -> None:
    answer = _ask(client, chat_model.name, "What is two plus two?", seed=3, max_tokens=8)
    messages = [{"role": "user", "content": "What is two plus two?"}]
    expected = chat_model.reply(messages, GenerationSettings.sampling(8, 1.0), ReplyOptions(seed=3))
    assert answer.object == "chat.completion" and answer.model == chat_model.name
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == expected.complete()
    assert answer.usage.prompt_tokens == len(tokenize_prompt(chat_model.tokenizer, messages))  # rendered as trained
    assert answer.usage.completion_tokens == expected.completion_tokens
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_streamed_equals_not_streamed(client: openai.OpenAI, chat_model: ChatModel) -> None:
    whole = _ask(client, chat_model.name, "Tell me a story", max_tokens=12)
    text, finish, chunks = _ask_streamed(
        client, chat_model.name, "Tell me a story", max_tokens=12, stream_options={"include_usage": True}
    )
    assert text == whole.choices[0].message.content and finish == whole.choices[0].finish_reason
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # arrived in pieces
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_sse_wire_format_ends_with_done(base_url: str, chat_model: ChatModel) -> None:
    body = json.dumps(
        {"model": chat_model.name, "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 3}
    ).encode()
    request = urllib.request.Request(
        base_url + "/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [line for line in response.read().decode().split("\n") if line]
    assert all(line.startswith("data: ") for line in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length"


def test_max_tokens_ends_with_length(client: openai.OpenAI, chat_model: ChatModel) -> None:
    answer = _ask(client, chat_model.name, "Count to a hundred", max_tokens=3)
    assert answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens == 3
    newer = _ask(client, chat_model.name, "Count to a hundred", max_completion_tokens=2)
    assert newer.choices[0].finish_reason == "length" and newer.usage.completion_tokens == 2


def test_stop_strings_cut_the_answer(client: openai.OpenAI, chat_model: ChatModel) -> None:
    full = _ask(client, chat_model.name, "Say many words", max_tokens=16).choices[0].message.content
    assert len(full) > 8, full
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    expected = full[: full.find(stop)]
    for stops in (stop, ["never appears", stop]):
        cut = _ask(client, chat_model.name, "Say many words", max_tokens=16, stop=stops)
        assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == (expected, "stop")
        assert _ask_streamed(client, chat_model.name, "Say many words", max_tokens=16, stop=stops)[:2] == (
            expected,
            "stop",
        )


def test_concurrent_requests_get_their_own_answers(client: openai.OpenAI, chat_model: ChatModel) -> None:
    prompts = ["first question", "a second, longer question about something", "third", "the fourth one"]
    ask = lambda i: _ask(client, chat_model.name, prompts[i % 4], seed=i % 4, max_tokens=10)  # noqa: E731
    sequential = [ask(i).choices[0].message.content for i in range(4)]
    assert len(set(sequential)) == 4  # else a mix-up could go unseen

    def ask_at_once(i: int) -> str:  # odd ones streamed, even ones not
        if i % 2:
            return _ask_streamed(client, chat_model.name, prompts[i % 4], seed=i % 4, max_tokens=10)[0]
        return ask(i).choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(ask_at_once, range(8)))
    assert concurrent == sequential * 2


def test_a_client_that_leaves_frees_the_model(base_url: str, client: openai.OpenAI, chat_model: ChatModel) -> None:
    body = json.dumps(
        {
            "model": chat_model.name,
            "messages": [{"role": "user", "content": "go on forever"}],
            "stream": True,
            "max_tokens": 100_000,
            "temperature": 1.0,
        }
    ).encode()
    port = int(base_url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        assert b"data: " in sock.recv(4096) + sock.recv(4096)  # generating; then the client hangs up
    # Had the abandoned reply kept the model for its 100,000 tokens, this would time out.
    quick = openai.OpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=60)
    assert _ask(quick, chat_model.name, "hi", max_tokens=2).usage.completion_tokens == 2


def test_greedy_when_temperature_is_zero(client: openai.OpenAI, chat_model: ChatModel) -> None:
    answer = client.chat.completions.create(
        model=chat_model.name, messages=[{"role": "user", "content": "hi"}], temperature=0, max_tokens=6
    )
    expected = chat_model.reply([{"role": "user", "content": "hi"}], GenerationSettings.sampling(6)).complete()
    assert answer.choices[0].message.content == expected
    tiny = client.chat.completions.create(  # too small to divide logits by (they overflow): greedy, as in vLLM
        model=chat_model.name, messages=[{"role": "user", "content": "hi"}], temperature=1e-282, max_tokens=6
    )
    assert tiny.choices[0].message.content == expected


def test_seed_makes_sampling_repeatable(client: openai.OpenAI, chat_model: ChatModel) -> None:
    ask = lambda seed: _ask(client, chat_model.name, "hi", seed=seed, max_tokens=8).choices[0].message.content  # noqa: E731
    assert ask(7) == ask(7) != ask(8)


# --- bad requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": "M"}, "messages", "Field required"),
        ({"model": "M", "messages": []}, "messages", "at least 1"),
        ({"model": "M", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "'system'"),
        ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature", "2"),
        ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens", "1"),
        ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "n": 2}, "n", "one choice per request"),
        (
            {"model": "M", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content",
            "'image_url' part",
        ),
        # What once held the model or crashed the server: seeds numpy cannot take, text no tokenizer takes,
        # stop strings by the thousand or of megabytes.
        ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "seed": 2**64}, "seed", "4294967295"),
        ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "seed": -1}, "seed", "0"),
        ({"model": "M", "messages": [{"role": "user", "content": "a \ud800 b"}]}, "messages[0].content", "surrogate"),
        (
            {"model": "M", "messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]},
            "messages[0].content[0].text",
            "surrogate",
        ),
        ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "stop": ["."] * 2000}, "stop", "at most 4"),
        ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "stop": "x" * 65}, "stop", "64 characters"),
    ],
)
def test_bad_requests_are_400_in_openais_shape(
    client: openai.OpenAI, chat_model: ChatModel, body: dict[str, Any], param: str, words: str
) -> None:
    body = {**body, "model": chat_model.name}
    # Posted as JSON text through the client: it would refuse some bodies itself, and JSON's ASCII escapes
    # are how half a surrogate pair arrives (curl, a JavaScript client).
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/chat/completions", content=json.dumps(body).encode(), cast_to=object)
    error = caught.value.response.json()["error"]
    assert set(error) == ERROR_FIELDS and error["type"] == "invalid_request_error"
    assert error["param"] == param and words in error["message"]


def test_a_prompt_of_megabytes_is_refused_before_it_is_tokenized(
    chat_model: ChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import loraops.inference

    tokenized = []
    monkeypatch.setattr(loraops.inference, "tokenize_prompt", lambda *a: tokenized.append(1) or [0])
    with serving(create_app(chat_model, limits=Limits(max_body_bytes=32 * MIB))) as url:
        with pytest.raises(openai.BadRequestError) as caught:
            _ask(openai.OpenAI(base_url=url, api_key="none"), chat_model.name, "hello " * 2_000_000)  # 2M tokens
    error = caught.value.response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert f"maximum context length is {LONG_CONTEXT} tokens" in error["message"] and "at least" in error["message"]
    assert not tokenized  # refused on its size alone: tokenizing it took seconds and gigabytes


def test_a_reply_must_fit_the_context_left_by_the_prompt(
    client: openai.OpenAI, chat_model: ChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = "one two three four five six"
    tokens = len(tokenize_prompt(chat_model.tokenizer, [{"role": "user", "content": prompt}]))
    monkeypatch.setattr(chat_model, "context_length", tokens + 5)  # a short context, for this test
    with pytest.raises(openai.BadRequestError) as caught:  # asked for more than is left: refused, never cut
        _ask(client, chat_model.name, prompt, max_tokens=6)
    error = caught.value.response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert f"you requested {tokens + 6} tokens ({tokens} in the messages, 6 in the completion)" in error["message"]
    # The server's default length (16 here) is the server's choice: cut to what is left.
    answer = client.chat.completions.create(
        model=chat_model.name, messages=[{"role": "user", "content": prompt}], temperature=0
    )
    assert (answer.usage.completion_tokens, answer.choices[0].finish_reason) == (5, "length")
    monkeypatch.setattr(chat_model, "context_length", tokens)  # not one token of room
    with pytest.raises(openai.BadRequestError, match=f"your messages resulted in {tokens} tokens"):
        _ask(client, chat_model.name, prompt)


def test_empty_and_unmatchable_stop_strings_stop_nothing(client: openai.OpenAI, chat_model: ChatModel) -> None:
    plain = _ask(client, chat_model.name, "Say many words", max_tokens=8)
    # "\x13": a character no token of this vocabulary shows, which transformers' stop matcher refuses outright.
    for stop in ("", ["", "never appears"], ["\x13", "never appears"]):
        with_empty = _ask(client, chat_model.name, "Say many words", max_tokens=8, stop=stop)
        assert with_empty.choices[0].message.content == plain.choices[0].message.content
        assert with_empty.usage.completion_tokens == plain.usage.completion_tokens == 8


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI, chat_model: ChatModel) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        _ask(client, "gpt-4o", "hi")
    assert caught.value.code == "model_not_found" and chat_model.name in caught.value.message
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_unknown_route_and_broken_json(base_url: str) -> None:
    status, body = _raw(base_url, "/embeddings", b"{}")
    assert status == 404 and set(body["error"]) == ERROR_FIELDS and "/v1/embeddings" in body["error"]["message"]
    status, body = _raw(base_url, "/chat/completions", b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]["message"]


def test_stop_scanner_holds_back_a_possible_stop() -> None:
    scanner = StopScanner(["END", "\n\n"])
    assert [scanner.feed(t) for t in ("ab", "cE", "Nx", "yEN", "Dz")] == ["ab", "c", "ENx", "y", ""]
    assert scanner.hit and scanner.feed("more") == ""
    assert StopScanner([]).feed("E") == "E"
    open_end = StopScanner(["END"])
    assert (open_end.feed("xE"), open_end.flush()) == ("x", "E")


# --- the command: API key, startup line, SIGTERM ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_api_key_and_clean_stop(run_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, API_KEY_ENV: KEY}
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "loraops", "serve", str(run_dir), "--port", str(port), "--max-new-tokens", "4"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        url = f"http://127.0.0.1:{port}/v1"
        while _raw_status(url) is None:
            assert server.poll() is None, log.read_text()
            time.sleep(0.2)
        messages = [{"role": "user", "content": "hi"}]
        wrong = openai.OpenAI(base_url=url, api_key="wrong-key-wrong-key", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            wrong.chat.completions.create(model=run_dir.name, messages=messages)
        assert caught.value.code == "invalid_api_key" and set(caught.value.body) == ERROR_FIELDS
        status, body = _raw(
            url, "/chat/completions", json.dumps({"model": run_dir.name, "messages": messages}).encode()
        )
        assert status == 401 and body["error"]["code"] == "invalid_api_key"  # no Authorization header at all
        keyed = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
        assert [m.id for m in keyed.models.list()] == [run_dir.name]
        assert keyed.chat.completions.create(model=run_dir.name, messages=messages).usage.completion_tokens <= 4
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    output = log.read_text()
    assert code == 0, output
    assert f"serving {run_dir.name} at {url} (model id: {run_dir.name})" in output
    assert '"POST /v1/chat/completions HTTP/1.1" 401' in output  # the access log ran, and shows no header
    assert KEY not in output and "Traceback" not in output and "server stopped" in output


def _raw_status(url: str) -> int | None:
    """The status of GET /models, or None while nothing listens yet."""
    try:
        with urllib.request.urlopen(url + "/models", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_a_taken_port_fails_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from loraops.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The model does not exist: the port is checked first, so the error is about the port.
        assert main(["serve", str(tmp_path / "no" / "model"), "--port", str(port)]) == 2
    assert f"--host 127.0.0.1 --port {port}: cannot listen there" in capsys.readouterr().err
