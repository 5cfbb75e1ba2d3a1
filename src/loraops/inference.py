"""A model loaded once for interactive use (`loraops chat`, `loraops serve`), its replies streamed as generated.

Prompts are rendered and tokenized exactly as training renders them (eval/generate.py, data/tokenize.py).
Each reply is generated in a thread feeding a TextIteratorStreamer; one lock keeps two replies from ever
sharing the model, so concurrent callers queue and each gets the answer it would get alone.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Generator, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from transformers import (
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
    TextIteratorStreamer,
)

from loraops import environment
from loraops.batching import Batcher, Job, generate_batch
from loraops.data.formats import Message
from loraops.data.tokenize import tokenize_prompt
from loraops.errors import LoraopsError
from loraops.eval.generate import GenerationSettings, stop_token_ids
from loraops.eval.targets import EvalTarget, resolve_model
from loraops.loading import load_for_inference
from loraops.logprobs import Recorder, TokenLogprob, prompt_logprobs
from loraops.models import resolve_model_path
from loraops.runs import RunDir
from loraops.structured import Grammars, logits_processor
from loraops.tool_calls import ToolFormat

log = logging.getLogger(__name__)

STOP, LENGTH = "stop", "length"  # why a reply ended, in OpenAI's words


class PromptTooLong(LoraopsError):
    """The prompt, or the prompt and the reply asked for, does not fit the model's context (OpenAI's wording)."""

    def __init__(self, context: int, prompt: int, reply: int | None = None, at_least: bool = False) -> None:
        if reply is None:
            detail, fix = f"your messages resulted in {'at least ' * at_least}{prompt} tokens", "the messages"
        else:
            detail = f"you requested {prompt + reply} tokens ({prompt} in the messages, {reply} in the completion)"
            fix = "the messages or completion"
        super().__init__(
            f"This model's maximum context length is {context} tokens. However, {detail}. "
            f"Please reduce the length of {fix}."
        )


class StopScanner:
    """Cuts streamed text at the first stop string, holding back a tail that may be the start of one."""

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.hit = False

    def feed(self, text: str) -> str:
        """The text safe to show now; nothing more once a stop string was seen (`hit`)."""
        if self.hit:
            return ""
        self.pending += text
        found = [at for at in (self.pending.find(s) for s in self.stops) if at >= 0]
        if found:
            self.hit = True
            out, self.pending = self.pending[: min(found)], ""
            return out
        keep = max((n for s in self.stops for n in range(1, len(s)) if self.pending.endswith(s[:n])), default=0)
        cut = len(self.pending) - keep
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class _CountingStreamer(TextIteratorStreamer):
    """A TextIteratorStreamer that also keeps the generated token ids, for usage counts and the finish reason,
    and hands each to the reply's log-probability recorder."""

    def __init__(self, tokenizer: Any, recorder: Recorder | None = None) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.generated: list[int] = []
        self.recorder = recorder

    def put(self, value: Any) -> None:
        if not self.next_tokens_are_prompt:
            tokens = value.reshape(-1).tolist()
            self.generated += tokens
            for token in tokens if self.recorder else ():
                self.recorder.chosen(token)  # type: ignore[union-attr]
        super().put(value)


class _Cancelled(StoppingCriteria):
    """Ends generation early once the reader is gone (a closed stream, a dropped connection, Ctrl-C)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


@dataclass(frozen=True)
class ReplyOptions:
    """What a client asks of one reply besides sampling: stop strings, a seed, whether a default length may be
    cut to fit the context left (`fit`; otherwise a reply that cannot fit is refused), log-probabilities
    (`logprobs`: of each token and that many likeliest alternatives; None: none), and a compiled grammar the
    reply must follow (structured.py)."""

    stops: tuple[str, ...] = ()
    seed: int | None = None
    fit: bool = True
    logprobs: int | None = None
    grammar: Any = None


class Reply:
    """One reply: `stream()` yields its text as it is generated; text, token counts and finish_reason
    are complete once the stream ends."""

    def __init__(
        self,
        model: ChatModel,
        prompt_ids: list[int],
        settings: GenerationSettings,
        options: ReplyOptions,
        stop_matcher: StoppingCriteria | None = None,
    ) -> None:
        self.model, self.prompt_ids, self.settings, self.options = model, prompt_ids, settings, options
        self.stops, self.seed, self.grammar = list(options.stops), options.seed, options.grammar
        self.stop_matcher = stop_matcher
        self.recorder = Recorder(options.logprobs) if options.logprobs is not None else None
        self.text = ""
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self._failure: BaseException | None = None
        self._cancel = threading.Event()

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    def cancel(self) -> None:
        """Stop generating at the next token (the reader is gone); safe from any thread."""
        self._cancel.set()

    def stream(self) -> Generator[str, None, None]:
        streamer, scanner = _CountingStreamer(self.model.tokenizer, self.recorder), StopScanner(self.stops)
        worker = threading.Thread(target=self._generate, args=(streamer,), daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if out := scanner.feed(piece):
                    self.text += out
                    yield out
                if scanner.hit:
                    break
            if out := scanner.flush():
                self.text += out
                yield out
        finally:
            # The reader may stop early (a stop string, a closed stream, Ctrl-C): generation then ends at its
            # next token. No waiting for that here, as this may run in any thread (even the worker's, when the
            # garbage collector closes the stream); the lock keeps the next reply waiting meanwhile.
            self.cancel()
        worker.join()  # it has ended the streamer: done, or about to be
        if self._failure is not None:
            raise self._failure
        self.completion_tokens = len(streamer.generated)
        self.finish_reason = self._finish(scanner.hit, streamer.generated)

    def complete(self) -> str:
        """Generate the whole reply; its text."""
        for _ in self.stream():
            pass
        return self.text

    def token_logprobs(self) -> list[tuple[TokenLogprob, str]]:
        """Each token of the reply's text with its log-probability and its text, once the stream ended: the
        end-of-turn token and tokens past a stop string are not part of the text, so not listed."""
        if self.recorder is None:
            return []
        tokenizer, kept, length = self.model.tokenizer, [], 0
        special = set(tokenizer.all_special_ids)
        for item in self.recorder.entries:
            if length >= len(self.text):
                break
            if item.token_id in special:
                continue
            piece = tokenizer.decode([item.token_id])
            kept.append((item, piece))
            length += len(piece)
        return kept

    def _finish(self, hit_stop_string: bool, generated: list[int]) -> str:
        if hit_stop_string or (generated and generated[-1] in self.model.stops):
            return STOP
        return LENGTH if len(generated) >= self.settings.max_new_tokens else STOP

    def _generate(self, streamer: _CountingStreamer) -> None:
        try:
            if not self._cancel.is_set():  # the reader may have left already
                self.model.run(self, streamer, self._cancel)
        except BaseException as exc:  # handed to the reader, which raises it
            self._failure = exc
        finally:
            streamer.end()  # ends the reader's loop (a second end, after generate's own, is harmless)


class ChatModel:
    """A model, its tokenizer and its name (the id clients see), loaded once."""

    def __init__(
        self, name: str, model: Any, tokenizer: Any, system_prompt: str | None = None, context: int | None = None
    ) -> None:
        self.name, self.model, self.tokenizer, self.system_prompt = name, model, tokenizer, system_prompt
        self.stops = stop_token_ids(model, tokenizer)
        self.context_length = context or getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.supports_logprobs = self.supports_grammars = self.supports_batching = True
        vocab = getattr(getattr(model, "config", None), "vocab_size", None) or len(tokenizer)
        self.grammars = Grammars(tokenizer, vocab, self.stops)
        self.tool_format = ToolFormat.of(tokenizer)  # how the model writes tool calls; None: it cannot
        self.generating = threading.Lock()  # one generate call (one reply, or one batch) at a time on the model
        self.batcher: Batcher | None = None  # serve's dynamic batching (enable_batching); chat generates alone
        self._encoding = threading.Lock()  # a fast tokenizer is not safe to call from two threads at once
        self._longest_token: int | None = None

    @classmethod
    def load(cls, spec: str) -> ChatModel:
        """A run, published folder, model folder or model name (see eval/targets.py resolve_model)."""
        import torch

        target = resolve_model(spec)
        env = environment.detect(torch.cuda.is_available())  # bf16 where the GPU has it; no warning on CPU
        base = f" (base {target.base_model})" if target.adapter_dir else ""
        log.info("loading %s%s on %s, %s", target.name, base, env.device_name, env.precision)
        base_path = resolve_model_path(target.base_model)
        model, tokenizer = load_for_inference(base_path, target.adapter_dir, env, merge=True)
        return cls(target.name, model, tokenizer, trained_system_prompt(target))

    def reply(
        self,
        messages: list[Message],
        settings: GenerationSettings,
        options: ReplyOptions = ReplyOptions(),
        tools: list[dict[str, Any]] | None = None,
    ) -> Reply:
        """A reply to `messages`, with `tools` offered in the prompt (tool_calls.py), not generated yet; a prompt
        the chat template refuses, or one longer than the model's context, fails here, at once."""
        from jinja2 import TemplateError

        try:
            with self._encoding:
                self._check_bound([_rendered_text(messages, tools)])
                prompt = tokenize_prompt(self.tokenizer, messages, tools)
        except TemplateError as exc:
            raise LoraopsError(f"the model's chat template refused these messages: {exc}") from None
        return self.continuation(prompt, settings, options)

    def encode_text(self, text: str, special_tokens: bool = True) -> list[int]:
        """A completion prompt's token ids: the text as is, with the special tokens the tokenizer adds to any text
        (a BOS for Llama's), as vLLM encodes completion prompts."""
        with self._encoding:
            self._check_bound([text])
            return list(self.tokenizer(text, add_special_tokens=special_tokens)["input_ids"])

    def continuation(
        self,
        prompt: list[int],
        settings: GenerationSettings,
        options: ReplyOptions = ReplyOptions(),
    ) -> Reply:
        """A reply that continues the token ids `prompt` (see `reply`)."""
        options = replace(options, stops=tuple(text for text in options.stops if text))  # "" stops nothing
        with self._encoding:
            matcher = self._stop_matcher(list(options.stops))
        return Reply(self, prompt, self._fitted(len(prompt), settings, options.fit), options, matcher)

    def score_prompt(self, prompt: list[int], top: int) -> list[TokenLogprob | None]:
        """The log-probability of each prompt token given those before it (None for the first)."""
        if self.context_length is not None and len(prompt) > self.context_length:
            raise PromptTooLong(self.context_length, len(prompt))
        with self.generating:
            return prompt_logprobs(self.model, prompt, top)

    def _stop_matcher(self, stops: list[str]) -> StoppingCriteria | None:
        """Transformers' matcher for the stop strings it can find in tokens, so generation ends on the token
        that completes one. It cannot match a string holding a character no token shows (some control
        characters): such a string still cuts the text (StopScanner) and ends generation at the next token."""

        def build(strings: list[str]) -> StoppingCriteria | None:
            try:
                return StopStringCriteria(self.tokenizer, strings)
            except ValueError:
                return None

        whole = build(stops) if stops else None
        if whole is not None or not stops:
            return whole
        matchable = [text for text in stops if build([text]) is not None]
        return build(matchable) if matchable else None

    def _check_bound(self, texts: list[str]) -> None:
        """Refuse, before tokenizing, a prompt that cannot fit whatever its tokens: tokenizing megabytes takes
        seconds and gigabytes. No token is longer than the longest in the vocabulary, which bounds the count."""
        if self.context_length is None:
            return
        if self._longest_token is None:
            vocab = self.tokenizer.get_vocab()
            # +1: SentencePiece drops a token's leading space when it is shown alone.
            self._longest_token = 1 + max(len(self.tokenizer.convert_tokens_to_string([t]).encode()) for t in vocab)
        size = sum(len(text.encode("utf-8", "surrogatepass")) for text in texts)
        at_least = size // self._longest_token
        if at_least >= self.context_length:
            raise PromptTooLong(self.context_length, at_least, at_least=True)

    def _fitted(self, prompt_tokens: int, settings: GenerationSettings, fit: bool) -> GenerationSettings:
        if self.context_length is None:
            return settings
        room = self.context_length - prompt_tokens
        if room <= 0:
            raise PromptTooLong(self.context_length, prompt_tokens)
        if settings.max_new_tokens <= room:
            return settings
        if not fit:
            raise PromptTooLong(self.context_length, prompt_tokens, settings.max_new_tokens)
        return replace(settings, max_new_tokens=room)

    def enable_batching(self, max_batch: int) -> None:
        """Generate replies that arrive together in batches of up to `max_batch` (batching.py)."""
        self.batcher = Batcher(self.generating, self._generate_jobs, max_batch) if max_batch > 1 else None

    def run(self, reply: Reply, streamer: _CountingStreamer, cancel: threading.Event) -> None:
        """Generate `reply` into `streamer`: in a batch with others when batching, else alone."""
        if self.batcher is None:
            with self.generating:
                if not cancel.is_set():  # the reader left while this reply waited for the model
                    self.generate(reply, streamer, cancel)
            return
        sampled_with_seed = reply.settings.do_sample and reply.seed is not None
        alone = reply.grammar is not None or sampled_with_seed  # a grammar's processor or a seed is per call
        settings = replace(reply.settings, max_new_tokens=0)
        self.batcher.submit(Job(reply, streamer, cancel, object() if alone else settings))

    def _generate_jobs(self, jobs: list[Job]) -> None:
        if len(jobs) == 1:
            self.generate(jobs[0].reply, jobs[0].streamer, jobs[0].cancel)
        else:
            generate_batch(self, jobs)

    def generate(self, reply: Reply, streamer: _CountingStreamer, cancel: threading.Event) -> None:
        import torch
        from transformers import set_seed

        if reply.seed is not None:
            set_seed(reply.seed)
        ids = torch.tensor([reply.prompt_ids], device=next(self.model.parameters()).device)
        recording = reply.recorder.attached(self.model) if reply.recorder else nullcontext()
        grammar = [logits_processor(reply.grammar)] if reply.grammar is not None else []
        with torch.inference_mode(), recording:
            self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                streamer=streamer,
                **reply.settings.kwargs(),
                eos_token_id=self.stops,
                pad_token_id=self.tokenizer.pad_token_id,
                use_cache=True,
                logits_processor=LogitsProcessorList(grammar),
                stopping_criteria=StoppingCriteriaList([_Cancelled(cancel), *filter(None, [reply.stop_matcher])]),
            )


def _rendered_text(messages: list[Message], tools: list[dict[str, Any]] | None) -> str:
    """What of the messages and tools any chat template writes into the prompt: texts, calls, definitions."""
    parts = [str(m.get("content") or "") for m in messages]
    parts += [json.dumps(m["tool_calls"], ensure_ascii=False) for m in messages if m.get("tool_calls")]
    return "".join(parts) + (json.dumps(tools, ensure_ascii=False) if tools else "")


def trained_system_prompt(target: EvalTarget) -> str | None:
    """The system prompt the model was trained with: from the run's config, or the copy a published folder holds."""
    for folder in (target.run_dir, target.adapter_dir, Path(target.base_model)):
        if folder is not None and RunDir(folder).config_path.is_file():
            return RunDir(folder).train_config().system_prompt or None
    return None
