"""`loraops serve`: an OpenAI-compatible HTTP server (FastAPI on uvicorn) for a run, a published model or a base model.

Binds 127.0.0.1 unless told otherwise. With LORAOPS_API_KEY set (environment or .env), every request must
carry `Authorization: Bearer <key>`; the key itself is never printed or logged.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from loraops.errors import LoraopsError
from loraops.llamacpp_chat import load_model
from loraops.serve.app import create_app
from loraops.serve.limits import Limits

API_KEY_ENV = "LORAOPS_API_KEY"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(
    spec: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_new_tokens: int = 256,
    engine: str = "transformers",
    gguf: str | None = None,
    limits: Limits = Limits(),
    cors_origins: Sequence[str] = (),
) -> None:
    """Load the model named by `spec` and serve it until Ctrl-C or SIGTERM."""
    import uvicorn

    api_key = os.environ.get(API_KEY_ENV) or None
    check_can_listen(host, port)
    model = load_model(spec, engine, gguf)
    app = create_app(model, api_key, max_new_tokens, limits, cors_origins)
    shown_host = f"[{host}]" if ":" in host else host
    print(f"serving {model.name} at http://{shown_host}:{port}/v1 (model id: {model.name})", flush=True)
    if api_key:
        print(f"API key required ({API_KEY_ENV}): send `Authorization: Bearer <key>`", flush=True)
    elif host not in _LOOPBACK:
        print(f"warning: {host} is reachable from other machines and no API key is set; set {API_KEY_ENV}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn shut down cleanly, then re-raised the Ctrl-C or SIGTERM that stopped it
        pass
    except SystemExit:  # uvicorn's answer to a port in use or an unknown host, after logging why
        if server.started:
            raise
        raise LoraopsError(
            f"cannot listen on {host}:{port} (see the line above); choose another --port or --host"
        ) from None
    print("server stopped", flush=True)


def serve_vllm(
    specs: Sequence[str],
    host: str,
    port: int,
    max_new_tokens: int | None,
    max_batch: int | None,
    cors_origins: Sequence[str],
    tensor_parallel: int | None,
    extra: str,
) -> None:
    """Replace this process with vLLM's server for the runs (serve/vllm.py), after checking all it needs."""
    from loraops.serve import vllm

    options = vllm.VllmOptions(host, port, max_new_tokens, max_batch, tuple(cors_origins), tensor_parallel, extra)
    vllm.check_engine()
    server = vllm.build(specs, options)
    check_can_listen(host, port)
    api_key = os.environ.get(API_KEY_ENV) or None
    if not api_key and host not in _LOOPBACK:
        print(f"warning: {host} is reachable from other machines and no API key is set; set {API_KEY_ENV}", flush=True)
    print(f"model ids: {', '.join(server.model_ids)}", flush=True)
    vllm.run(server, api_key)


def check_can_listen(host: str, port: int) -> None:
    """Fail before the model loads, not after, when the port is taken or the address is not this machine's."""
    if not 1 <= port <= 65535:
        raise LoraopsError(f"--port {port}: must be between 1 and 65535")
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind(address)
    except (OSError, OverflowError) as exc:
        raise LoraopsError(
            f"--host {host} --port {port}: cannot listen there ({getattr(exc, 'strerror', None) or exc}); "
            "choose another --port, or an address of this machine"
        ) from None
