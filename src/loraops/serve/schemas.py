"""The request bodies the server accepts, as Pydantic models in OpenAI's shape.

Fields OpenAI defines that loraops does not use (frequency_penalty, user, ...) are accepted and ignored,
so existing clients work unchanged; the ones whose absence would change the answer are refused.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from loraops.config.schema import MAX_SEED

# OpenAI's limit on stop strings; and a bound on each: transformers' stop-string matcher builds a table
# of vocabulary size times string length (4 strings of 1,000 characters: 1.3 GB).
MAX_STOP_STRINGS, MAX_STOP_LENGTH = 4, 64


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = Field(None)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    tools: list[Any] | None = None  # refused when given: answering without them would mislead the client

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        """JSON may escape half a surrogate pair (`"\\ud800"`): no tokenizer takes such text, and no reply could
        quote it back. Refused wherever it stands, naming the place as a param."""
        found = unpaired_surrogate(data)
        if found is not None:
            param, at = found
            raise PydanticCustomError(
                "unpaired_surrogate",
                "holds half a UTF-16 surrogate pair at character {at}; send valid Unicode text",
                {"param": param, "at": at},
            )
        return data

    @field_validator("stop")
    @classmethod
    def _bounded_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}")
        if any(len(text) > MAX_STOP_LENGTH for text in stops):
            raise ValueError(f"each stop string must be at most {MAX_STOP_LENGTH} characters")
        return stop

    def stop_strings(self) -> list[str]:
        """The stop strings; an empty one stops nothing (as OpenAI treats it), so it is left out."""
        return [text for text in ([self.stop] if isinstance(self.stop, str) else self.stop or []) if text]


def unpaired_surrogate(value: Any, where: str = "") -> tuple[str, int] | None:
    """(where, character index) of the first lone surrogate in a JSON value's strings or keys, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return where or "(body)", exc.start
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        place = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip(".")
        found = unpaired_surrogate(key, place) if isinstance(key, str) else None
        found = found or unpaired_surrogate(item, place)
        if found is not None:
            return found
    return None
