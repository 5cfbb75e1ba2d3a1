"""What one server takes on: a bounded request body, and a bounded queue of requests for the model (429
beyond it, so a burst is refused at once instead of waiting minutes)."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 2**20


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 8 * MIB
    max_queue: int = 64  # requests waiting for the model, besides the batch it is answering
    max_batch: int = 8  # requests generated together (dynamic batching; 1: one at a time)
