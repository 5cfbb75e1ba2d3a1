"""Enforcing the limits: the queue of requests for the model (429 beyond it) and the request body's size (413)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from loraops.serve.errors import APIError


class QueueFull(APIError):
    def __init__(self, waiting: int) -> None:
        super().__init__(
            429,
            f"The server is busy: {waiting} requests wait for the model already. Retry after a moment.",
            type="requests",
            code="rate_limit_exceeded",
        )


class Admission:
    """Counts the requests the model is answering (up to a batch) or that wait for it; past `max_queue` waiting,
    a request is refused."""

    def __init__(self, max_queue: int, max_batch: int = 1) -> None:
        self.max_queue, self.capacity = max_queue, max_queue + max_batch
        self._count = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            if self._count >= self.capacity:
                raise QueueFull(self.max_queue)
            self._count += 1

    def leave(self) -> None:
        with self._lock:
            self._count -= 1

    @contextmanager
    def slot(self) -> Iterator[Slot]:
        """A place for one request, freed when the block ends unless handed over (to a stream that frees it)."""
        self.enter()
        held = Slot(self)
        try:
            yield held
        finally:
            if not held.handed_over:
                self.leave()


class Slot:
    def __init__(self, admission: Admission) -> None:
        self.admission, self.handed_over = admission, False

    def hand_over(self) -> Callable[[], None]:
        """Keep the place past the block; the function returned frees it."""
        self.handed_over = True
        return self.admission.leave


class BodyTooLarge(APIError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"The request body is larger than this server's limit of {limit} bytes.", code="request_too_large"
        )


class BodyLimit:
    """ASGI middleware: a declared Content-Length over the limit is refused before the body is read, and a
    chunked body is cut off where it passes the limit (the app's error handler answers 413)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await BodyTooLarge(self.limit).response()(scope, receive, send)
            return
        received = 0

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)
