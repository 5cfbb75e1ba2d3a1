"""Tools in a chat request: offered to the model through its chat template (tool_calls.py), honoured or
refused by name when the model cannot take them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loraops.data.tokenize import renders_tools
from loraops.inference import ChatModel, Reply
from loraops.serve.errors import APIError
from loraops.serve.replies import grammar_engine, user_errors
from loraops.serve.schemas import ChatCompletionRequest
from loraops.tool_calls import HERMES_OPEN, CallReader, ToolFormat


@dataclass(frozen=True)
class ToolOffer:
    """The tools rendered into the prompt, the grammar of a forced call, and stop strings that keep a reply to
    one call (parallel_tool_calls false)."""

    tools: list[dict[str, Any]]
    format: ToolFormat
    grammar: Any
    stops: tuple[str, ...]

    def reader(self, model: ChatModel, reply: Reply) -> CallReader:
        return self.format.reader(model.tokenizer, reply.prompt_ids, self.tools)


def tool_offer(model: ChatModel, request: ChatCompletionRequest, history_uses_tools: bool) -> ToolOffer | None:
    """What the request offers the model; None without tools (or with tool_choice 'none')."""
    if history_uses_tools and not renders_tools(model.tokenizer):
        raise APIError(
            400,
            "the messages hold tool calls or results, and this model's chat template renders neither",
            param="messages",
        )
    if not request.tools_used:
        return None
    form = model.tool_format
    if form is None:
        raise APIError(400, _no_tools(model), param="tools")
    tools = [tool.model_dump(exclude_none=True) for tool in request.tools or []]
    forced = request.tool_choice == "required" or request.forced_function is not None
    grammar = _forced(model, form, tools, request.forced_function) if forced else None
    return ToolOffer(tools, form, grammar, _one_call(form) if request.parallel_tool_calls is False else ())


def _no_tools(model: ChatModel) -> str:
    if not renders_tools(model.tokenizer):
        return "tools: this model's chat template renders no tools; send the request without them"
    return (
        "tools: this model's tool calls cannot be read: its tokenizer has no response_template and its chat "
        f"template does not write calls as {HERMES_OPEN} JSON"
    )


def _forced(model: ChatModel, form: ToolFormat, tools: list[dict[str, Any]], name: str | None) -> Any:
    """The grammar a forced call (tool_choice 'required' or naming a function) is written by."""
    if not form.hermes:
        raise APIError(
            400,
            f"tool_choice: a forced call is written by constrained decoding in {HERMES_OPEN} markup, and this model "
            "writes calls in its own; send tool_choice 'auto'",
            param="tool_choice",
        )
    grammar_engine(model, "tool_choice", "a forced tool call")
    return user_errors("tools")(lambda: form.forced(model.grammars, tools, name))


def _one_call(form: ToolFormat) -> tuple[str, ...]:
    if form.call_end is None:
        raise APIError(
            400,
            "parallel_tool_calls: false needs a literal end of a call in this model's tool-call format",
            param="parallel_tool_calls",
        )
    return (form.call_end,)
