"""Dynamic batching: requests that arrive together are generated in one batch.

Each reply's worker thread submits a job and waits. After a short window (so companions can arrive), the
first to take the model generates the oldest waiting job together with every waiting job it can share a
`generate` call with (the same sampling settings; a sampled reply with its own seed, or one held to a
grammar, goes alone so that it stays repeatable), up to `max_batch`. The model serves one batch at a time;
a batch's replies stream as they are generated, and each ends (and frees its client) as soon as its own
end-of-turn token, stop string, length or cancellation is reached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 0.02  # how long a request waits for companions before its batch starts


@dataclass(eq=False)
class Job:
    """One reply to generate: its key says which others it may share a batch with."""

    reply: Any
    streamer: Any
    cancel: threading.Event
    key: Hashable
    done: threading.Event = field(default_factory=threading.Event)
    failure: BaseException | None = None


class Batcher:
    """Groups submitted jobs into batches and runs them one at a time under `lock` with `run_batch`."""

    def __init__(self, lock: threading.Lock, run_batch: Callable[[list[Job]], None], max_batch: int) -> None:
        self.lock, self.run_batch, self.max_batch = lock, run_batch, max_batch
        self._waiting: list[Job] = []
        self._guard = threading.Lock()

    @property
    def waiting(self) -> int:
        """How many jobs wait for the model."""
        with self._guard:
            return len(self._waiting)

    def submit(self, job: Job) -> None:
        """Generate `job` in some batch; returns when it is done, raising what failed it."""
        with self._guard:
            self._waiting.append(job)
        time.sleep(WINDOW_S)
        while not job.done.is_set():
            with self.lock:  # a batch that took this job ran, and is done, before the lock was ours
                batch = self._take(job)
                if batch:
                    self._run(batch)  # the oldest job's batch: this one's, or one before it
        if job.failure is not None:
            raise job.failure

    def _take(self, job: Job) -> list[Job]:
        with self._guard:
            if job not in self._waiting:
                return []
            first = self._waiting[0]  # the oldest waits least: its batch goes first
            batch = [j for j in self._waiting if j.key == first.key][: self.max_batch]
            self._waiting = [j for j in self._waiting if j not in batch]
        return batch

    def _run(self, batch: list[Job]) -> None:
        live = [j for j in batch if not j.cancel.is_set()]  # a reader that left while waiting
        try:
            if live:
                self.run_batch(live)
        except BaseException as exc:  # every reply of the batch raises it to its reader
            for job in live:
                job.failure = exc
        finally:
            for job in batch:
                job.done.set()


def generate_batch(chat: Any, jobs: list[Job]) -> None:
    """One `generate` call for several replies with the same sampling settings: prompts left-padded, each row
    ended by its own end-of-turn token, stop strings, length or cancellation, its tokens routed to its own
    streamer (and log-probability recorder) as they come."""
    import torch
    from transformers import StoppingCriteriaList

    pad = chat.tokenizer.pad_token_id if chat.tokenizer.pad_token_id is not None else chat.stops[0]
    prompts = [job.reply.prompt_ids for job in jobs]
    width = max(len(p) for p in prompts)
    device = next(chat.model.parameters()).device
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    rows = _Rows(jobs, width, chat.stops)
    settings = jobs[0].reply.settings
    longest = max(job.reply.settings.max_new_tokens for job in jobs)
    recorders = [(i, job.reply.recorder) for i, job in enumerate(jobs) if job.reply.recorder is not None]
    handles = [recorder.attach_row(chat.model, i) for i, recorder in recorders]
    try:
        with torch.inference_mode():
            chat.model.generate(
                input_ids=ids,
                attention_mask=mask,
                streamer=rows,
                **{**settings.kwargs(), "max_new_tokens": longest},
                eos_token_id=chat.stops,
                pad_token_id=pad,
                use_cache=True,
                stopping_criteria=StoppingCriteriaList([rows]),
            )
    finally:
        for handle in handles:
            handle.remove()
        rows.end()


class _Rows:
    """The batch's streamer and stopping criterion at once: hands each row's new tokens to that row's streamer
    until the row is done, and says which rows are done (transformers pads those from then on).

    A row asked to stop at input length L (its criterion met with L tokens in it) gets its tokens up to L and
    is then ended, whether transformers hands out a step's tokens before asking the criteria or after."""

    def __init__(self, jobs: list[Job], width: int, eos: list[int]) -> None:
        self.jobs, self.width, self.eos = jobs, width, set(eos)
        self.finished = [False] * len(jobs)
        self.delivered = [0] * len(jobs)
        self.stop_at: list[int | None] = [None] * len(jobs)
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate's first put is the prompts: each streamer skips its own
            self.prompt_seen = True
            for job in self.jobs:
                job.streamer.put(_tensor(job.reply.prompt_ids))
            return
        for i, token in enumerate(value.reshape(-1).tolist()):
            if self.finished[i] or self._reached(i):
                self._finish(i)
                continue
            self.jobs[i].streamer.put(_tensor([token]))
            self.delivered[i] += 1
            if token in self.eos or self._reached(i):
                self._finish(i)

    def end(self) -> None:
        for i in range(len(self.jobs)):
            self._finish(i)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        length = input_ids.shape[1]
        for i, job in enumerate(self.jobs):
            if self.finished[i] or self.stop_at[i] is not None:
                continue
            reply, matcher = job.reply, job.reply.stop_matcher
            row_scores = None if scores is None else scores[i : i + 1]
            stop = matcher is not None and bool(matcher(input_ids[i : i + 1], row_scores).any())
            if job.cancel.is_set() or length - self.width >= reply.settings.max_new_tokens or stop:
                self.stop_at[i] = length
        done = [f or at is not None for f, at in zip(self.finished, self.stop_at)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _reached(self, i: int) -> bool:
        at = self.stop_at[i]
        return at is not None and self.width + self.delivered[i] >= at

    def _finish(self, i: int) -> None:
        if not self.finished[i]:
            self.finished[i] = True
            self.jobs[i].streamer.end()  # this reply's reader is done now, not when the whole batch is


def _tensor(tokens: list[int]) -> Any:
    import torch

    return torch.tensor([tokens])
