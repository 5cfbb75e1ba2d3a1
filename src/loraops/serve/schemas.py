"""The request bodies the server accepts, as Pydantic models in OpenAI's shape.

Every field OpenAI defines is honoured, accepted because it cannot change the answer (`user`, `metadata`,
...), or refused with a 400 naming it when set to anything but its default; a field OpenAI does not define
is refused as OpenAI refuses it ("Unrecognized request argument supplied"). Nothing is silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from loraops.config.schema import MAX_SEED
from loraops.logprobs import MAX_TOP_LOGPROBS

# OpenAI's limit on stop strings; and a bound on each: transformers' stop-string matcher builds a table
# of vocabulary size times string length (4 strings of 1,000 characters: 1.3 GB).
MAX_STOP_STRINGS, MAX_STOP_LENGTH = 4, 64
MAX_COMPLETION_LOGPROBS = 5  # OpenAI's limit for /v1/completions

# Fields that would change the answer and are not implemented: refused unless left at their default.
_UNSUPPORTED = {
    "frequency_penalty": "frequency_penalty is not supported; send 0 or leave it out",
    "presence_penalty": "presence_penalty is not supported; send 0 or leave it out",
    "logit_bias": "logit_bias is not supported; leave it out",
    "functions": "functions (the legacy form of tools) are not supported; send the request without them",
    "function_call": "function_call (the legacy form of tool_choice) is not supported; leave it out",
    "audio": "audio output is not supported; this model answers in text",
    "prediction": "predicted outputs are not supported; leave prediction out",
    "reasoning_effort": "reasoning_effort is not supported by this model; leave it out",
    "verbosity": "verbosity is not supported; leave it out",
    "web_search_options": "web search is not supported; leave web_search_options out",
    "suffix": "suffix (insertion) is not supported; leave it out",
    "best_of": "best_of is not supported; send 1 or leave it out",
}
_DEFAULTS: dict[str, Any] = {"frequency_penalty": 0, "presence_penalty": 0, "best_of": 1}


def refusal(param: str, message: str) -> PydanticCustomError:
    return PydanticCustomError("unsupported", message, {"param": param})


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """`text`, `json_object` (any JSON object) or `json_schema` (an object matching the schema)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise refusal("response_format.json_schema", "json_schema is given with type 'json_schema', and only then")
        return self


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionName


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Request(BaseModel):
    """What chat and completions requests share: sampling, stops, seed, streaming and accepted metadata."""

    model_config = ConfigDict(extra="forbid")

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = Field(None)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    # Accepted, as they cannot change an answer: who asks, labels, storage and routing hints.
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    # Refused unless at their default (see _UNSUPPORTED).
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

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

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: Any) -> Any:
        for name, message in _UNSUPPORTED.items():
            if isinstance(data, dict) and data.get(name) not in (None, _DEFAULTS.get(name), {}, []):
                raise refusal(name, message)
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

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    modalities: list[str] | None = None
    # Refused unless at their default (see _UNSUPPORTED).
    functions: list[Any] | None = None
    function_call: str | dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _honoured_or_refused(self) -> ChatCompletionRequest:
        names = [tool.function.name for tool in self.tools or []]
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise refusal("tool_choice", "tool_choice names a function that is not among the request's tools")
        if self.tool_choice == "required" and not names:
            raise refusal("tool_choice", "tool_choice 'required' needs tools")
        if self.tools_used and self.response_format is not None and self.response_format.type != "text":
            raise refusal("response_format", "response_format JSON cannot be combined with tools on this server")
        if self.modalities not in (None, ["text"]):
            raise refusal("modalities", "this model answers in text only; send ['text'] or leave modalities out")
        if self.top_logprobs is not None and not self.logprobs:
            raise refusal("top_logprobs", "top_logprobs needs logprobs: true")
        return self

    @property
    def tools_used(self) -> bool:
        """Whether the model is offered the tools: sent, and tool_choice is not 'none'."""
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def forced_function(self) -> str | None:
        """The function tool_choice names, or None."""
        return self.tool_choice.function.name if isinstance(self.tool_choice, NamedToolChoice) else None

    @property
    def logprobs_top(self) -> int | None:
        """How many likeliest tokens to report at each position, or None when logprobs were not asked for."""
        return (self.top_logprobs or 0) if self.logprobs else None


# A prompt: text, texts, token ids, or lists of token ids (as lm-eval's local-completions sends them).
Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(_Request):
    prompt: Prompt
    max_tokens: int = Field(16, ge=0)  # OpenAI's default; 0 with echo scores the prompt alone
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    suffix: str | None = None
    best_of: int | None = None

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, prompt: Prompt) -> Prompt:
        if isinstance(prompt, list) and (not prompt or any(isinstance(p, list) and not p for p in prompt)):
            raise ValueError("an empty prompt; send text or token ids")
        return prompt

    @model_validator(mode="after")
    def _generates_or_echoes(self) -> CompletionRequest:
        if self.max_tokens == 0 and not self.echo:
            raise refusal("max_tokens", "max_tokens 0 generates nothing; send echo: true to score the prompt")
        return self

    def prompts(self) -> list[str | list[int]]:
        """One entry per choice: a text or token ids."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(p, int) for p in self.prompt):
            return [list(self.prompt)]  # type: ignore[arg-type]
        return list(self.prompt)  # type: ignore[arg-type]


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize, which lm-eval's local-completions uses when the server offers it."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    add_special_tokens: bool = True
    model: str | None = None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[int]
    model: str | None = None


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
