"""What counts as a secret, and how it is kept out of records, messages and command lines.

One place decides, so the run snapshot, the Hub and lakeFS errors and the remote command lines
all agree on which names are secret (HF_TOKEN, LAKEFS_SECRET_ACCESS_KEY, api_key, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "<redacted>"
# "token" but not "tokens": max_new_tokens counts tokens, HF_TOKEN is one.
_SECRET_NAME = re.compile(r"(token(?!s)|secret|password|passwd|access_key|api_key|credential)", re.IGNORECASE)
# Shorter values are too likely to occur by chance in a command line to be refused for it.
_MIN_SECRET_LENGTH = 8


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def redact(value: Any) -> Any:
    """Replace the values of secret-looking keys, recursively through dicts and lists."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_name(str(k)) and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def scrubbed(value: Any, secrets: Iterable[str | None]) -> Any:
    """`value` with every given secret replaced in every string inside it (dicts, lists), keys untouched."""
    found = [s for s in secrets if s]
    if isinstance(value, dict):
        return {k: scrubbed(v, found) for k, v in value.items()}
    if isinstance(value, list):
        return [scrubbed(v, found) for v in value]
    return scrub(value, found) if isinstance(value, str) else value


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every given secret value replaced by REDACTED."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def secret_values(environ: Mapping[str, str]) -> dict[str, str]:
    """Name -> value of the secret-looking variables worth looking for in outgoing text."""
    return {k: v for k, v in environ.items() if is_secret_name(k) and len(v) >= _MIN_SECRET_LENGTH}


def leaked_secret(text: str, environ: Mapping[str, str]) -> str | None:
    """The name of the first secret variable whose value appears in `text`, or None."""
    return next((name for name, value in secret_values(environ).items() if value in text), None)


def public_url(url: str) -> str:
    """`url` without its `user:password@` part, fit for records and messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def without_url_credentials(text: str, url: str) -> str:
    """`text` with the `user:password@` of `url`, and the password alone, taken out wherever they appear."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        text = text.replace(parts.netloc.rsplit("@", 1)[0] + "@", "")
    return scrub(text, [parts.password])
