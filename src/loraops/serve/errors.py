"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, for ours and the framework's
(validation, unknown route, a body too large), so clients raise their usual exceptions; never a 500 for a
request a client can fix."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"


class APIError(Exception):
    def __init__(
        self, status: int, message: str, type: str = INVALID_REQUEST, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.body = status, {"message": message, "type": type, "param": param, "code": code}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.body}, status_code=self.status)


def param_name(loc: Any) -> str | None:
    """A validation error's place in OpenAI's spelling: ("body", "messages", 0, "role") -> messages[0].role."""
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc if p != "body"]
    return "".join(parts).lstrip(".") or None


def validation_error(exc: RequestValidationError) -> APIError:
    first: dict[str, Any] = dict(exc.errors()[0]) if exc.errors() else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return APIError(400, f"The request body is not valid JSON ({first.get('ctx', {}).get('error', '')})")
    param = (first.get("ctx") or {}).get("param") or param_name(first.get("loc", ()))
    if first.get("type") == "extra_forbidden":  # OpenAI's own answer to a field it does not know
        return APIError(400, f"Unrecognized request argument supplied: {param}", param=param)
    return APIError(400, f"{param}: {first['msg']}" if param else str(first["msg"]), param=param)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, APIError):  # raised while FastAPI read the body (a chunked body too large)
            return exc.__cause__.response()
        message = f"Unknown route: {request.method} {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return APIError(exc.status_code, message).response()

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("request failed: %s: %s", type(exc).__name__, exc)
        return APIError(500, "The server failed to answer; see its log.", "server_error").response()
