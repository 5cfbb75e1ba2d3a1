"""Log-probabilities of tokens as OpenAI's API reports them: of each generated token, from the logits of the
forward pass that chose it (a forward hook on the model, so nothing is computed twice), and of a prompt's
tokens, from one teacher-forced pass over it. Both are the model's own distribution, before temperature or
top_p reshape it for sampling, as vLLM reports them by default."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

MAX_TOP_LOGPROBS = 20  # OpenAI's limit for chat; completions allow 5


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]  # the likeliest tokens and their log-probabilities, likeliest first


class Recorder:
    """Collects a TokenLogprob for each generated token: the hook keeps the distribution of the step's forward
    pass, and `chosen` (called with the token the step picked) reads it."""

    def __init__(self, top: int) -> None:
        self.top, self.row = top, 0
        self.entries: list[TokenLogprob] = []
        self._pending: Any = None

    def hook(self, module: Any, args: Any, output: Any) -> None:
        import torch

        logits = output.logits if hasattr(output, "logits") else output[0]
        self._pending = torch.log_softmax(logits[self.row, -1].float(), dim=-1)

    def chosen(self, token_id: int) -> None:
        if self._pending is not None:
            self.entries.append(entry(self._pending, token_id, self.top))
            self._pending = None

    @contextmanager
    def attached(self, model: Any) -> Iterator[None]:
        handle = self.attach_row(model, 0)
        try:
            yield
        finally:
            handle.remove()

    def attach_row(self, model: Any, row: int) -> Any:
        """Record row `row` of each forward pass of `model` (a batch's); the hook's handle, to remove."""
        self.row = row
        # A PEFT model's generate runs its base model's forward (the adapter's layers inside it).
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        return inner.register_forward_hook(self.hook)


def entry(row: Any, token_id: int, top: int) -> TokenLogprob:
    """The log-probability of `token_id` in `row` (log-softmaxed logits), and the `top` likeliest."""
    likeliest: tuple[tuple[int, float], ...] = ()
    if top:
        values, ids = row.topk(top)
        likeliest = tuple(zip(ids.tolist(), values.tolist()))
    return TokenLogprob(token_id, float(row[token_id]), likeliest)


def prompt_logprobs(model: Any, ids: list[int], top: int) -> list[TokenLogprob | None]:
    """None for the first token (nothing predicts it), then each token's log-probability given those before it."""
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0]
        rows = torch.log_softmax(logits[:-1].float(), dim=-1)
        return [None, *(entry(rows[i], ids[i + 1], top) for i in range(len(ids) - 1))]
