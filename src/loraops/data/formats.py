"""Turn records in the supported formats into chat messages (or raw text).

Formats, detected per record with `data_format=auto` or chosen by name:
  messages            OpenAI chat (`messages`: role/content, content parts, `weight`, tool calls)
  sharegpt            `conversations` of `from`/`value` turns (human, gpt, system, function_call, observation)
  prompt_completion   `prompt` and `completion`: two strings, or two lists of messages (TRL's conversational form)
  instruction         Alpaca: `instruction`, optional `input`, `output`
  gemini              Vertex AI / Gemini: `contents` of `role` (user, model) and text `parts`, `systemInstruction`
  xtuner              XTuner: `conversation`, a list of {`system`, `input`, `output`} rounds
  OpenAssistant message trees (`prompt` with nested `replies`) become one conversation per path (`tree_paths`)
  question_answer, input_output, instruction_response, dolly: common column layouts, mapped onto the above
  text                `text`: continued pre-training, a loss on every token
Any other layout is read through a `columns` mapping. Preference records (chosen/rejected pairs, KTO's
labelled answers) are read as pairs for the preference methods, or as their chosen answer with
preference=chosen. Otherwise they, multimodal and unlabelled records are refused with the way out, never
trained as something they are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loraops.data.messages import (
    PROMPT_ROLE,
    REASONING,
    Message,
    NonText,
    RecordProblem,
    Turns,
    content_text,
    parse_tools,
    parse_turns,
)
from loraops.errors import DataError

__all__ = [
    "Example",
    "FormatOptions",
    "Message",
    "Skipped",
    "detect_format",
    "is_preference",
    "records_of",
    "shared_length",
    "to_example",
]

TEXT = "text"
# Common column layouts: (format name, the fields that identify it, how they map onto a base format).
PRESETS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "question_answer": (("question", "answer"), {"prompt": "question", "completion": "answer"}),
    "instruction_response": (("instruction", "response"), {"instruction": "instruction", "output": "response"}),
    "dolly": (
        ("instruction", "context", "response"),
        {"instruction": "instruction", "input": "context", "output": "response"},
    ),
    "input_output": (("input", "output"), {"prompt": "input", "completion": "output"}),
}
BASE_FORMATS = ("messages", "sharegpt", "prompt_completion", "instruction", "gemini", "xtuner", TEXT)
FORMATS = ("auto", *BASE_FORMATS, *PRESETS)
PREFERENCE_USES = ("refuse", "chosen")
# FormatOptions.preference of the preference methods: each record a pair (dpo, orpo), or also an answer
# labelled true/false (kto).
PAIRS, LABELLED = "pairs", "labelled"
REASONING_USES = ("train", "mask", "drop")
TREE_PATHS = ("best", "all")  # a message tree: its highest-ranked path, or every path to a leaf
# Plain-string prompt/completion: a question and its answer (chat), or text the completion goes on from.
PROMPT_COMPLETION_USES = ("chat", "continuation")
OASST_ROLES = {"prompter": "user", "assistant": "assistant"}
EMPTY_SYSTEM_FILLED, EMPTY_SYSTEM_REMOVED = "empty system turn: system_prompt put in", "empty system turn: removed"
EMPTY_USER = "empty user turn"
LOOKS_CONTINUED = (
    "completion starting with a space, as a text continuation does (TRL's standard form); "
    "if these continue their prompt, set prompt_completion=continuation"
)
# The names `columns` may map a record's fields onto.
COLUMN_TARGETS = (
    "messages",
    "conversations",
    "prompt",
    "completion",
    "instruction",
    "input",
    "output",
    "system",
    "text",
    "tools",
    "chosen",
    "rejected",
    "label",
)
_MEDIA_FIELDS = ("images", "image", "videos", "video", "audios", "audio")
_MEDIA_PLACEHOLDERS = ("<image>", "<video>", "<audio>")


@dataclass(frozen=True)
class Example:
    """One record as chat messages (or raw text), with where it came from."""

    messages: list[Message]
    format: str
    path: str
    line: int
    untrained: frozenset[int] = frozenset()  # assistant turns kept as context only: weight 0, prompt side
    tools: list[dict[str, Any]] | None = None
    mask_reasoning: bool = False  # reasoning=mask: the assistant turns' reasoning is context, not trained
    notes: tuple[str, ...] = ()  # what was made of the record besides its text, for `check` to count
    unread: frozenset[str] = frozenset()  # turn keys loraops does not read, for `check` to name
    # Preference data (preference=pairs): `messages` is the prompt and the chosen answer, which starts at
    # `answer_from`; `rejected` the rejected answer's turns (none for a KTO answer, whose `label` says how good).
    answer_from: int | None = None
    rejected: tuple[Message, ...] = ()
    label: bool | None = None

    @property
    def is_text(self) -> bool:
        """The `text` format: one `text` turn, no chat template, every token trained."""
        return self.format == TEXT

    @property
    def is_continuation(self) -> bool:
        """prompt_completion=continuation: the completion goes on from the prompt's text, no chat template."""
        return bool(self.messages) and self.messages[0]["role"] == PROMPT_ROLE

    @property
    def is_pair(self) -> bool:
        return bool(self.rejected)

    @property
    def prompt(self) -> list[Message]:
        """A preference example's prompt: the turns before its answer."""
        return self.messages[: self.answer_from]

    @property
    def has_reasoning(self) -> bool:
        return any(m.get(REASONING) for m in self.messages)

    @property
    def trains_tools(self) -> bool:
        return self.tools is not None or any(m["role"] == "tool" or m.get("tool_calls") for m in self.messages)


@dataclass(frozen=True)
class FormatOptions:
    data_format: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)  # loraops field -> the record's field
    system_prompt: str | None = None  # added to conversations that have no system turn
    skip_non_text: bool = False  # drop (and count) records with images or audio instead of refusing them
    preference: str = "refuse"  # chosen: train on the preferred answers; pairs, labelled: preference methods
    reasoning: str = "train"  # an assistant turn's reasoning: train, mask (context only) or drop
    tree_paths: str = "best"  # a message tree (OpenAssistant): best path, or all paths to a leaf
    prompt_completion: str = "chat"  # plain-string prompt/completion: chat, or continuation (no chat template)


class Skipped(Exception):
    """A record left out on purpose (skip_non_text, a rejected preference answer); counted, not an error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def records_of(record: dict[str, Any], tree_paths: str = "best") -> list[dict[str, Any]]:
    """A message tree (OpenAssistant's export: `prompt` with nested `replies`) as one `messages` record per
    path, the highest-ranked reply at each turn (`best`) or every path to a leaf (`all`); any other record as
    itself. Deleted messages and those reviewers rejected are left out; a path ending on a user turn drops it."""
    root = record.get("prompt")
    if not (isinstance(root, dict) and "replies" in root and root.get("role") in OASST_ROLES):
        return [record]
    paths = _tree_paths(root, tree_paths == "all")
    out = []
    for path in paths:
        while path and path[-1]["role"] != "assistant":
            path = path[:-1]
        if path:
            out.append({"messages": path})
    return out


def _tree_paths(node: dict[str, Any], every: bool) -> list[list[Message]]:
    turn = {"role": OASST_ROLES.get(node.get("role", ""), "user"), "content": node.get("text", "")}
    kept = [r for r in node.get("replies") or [] if isinstance(r, dict) and _kept(r)]
    if not kept:
        return [[turn]]
    kept.sort(key=lambda r: (r.get("rank") is None, r.get("rank") or 0))
    return [[turn, *rest] for reply in (kept if every else kept[:1]) for rest in _tree_paths(reply, every)]


def _kept(node: dict[str, Any]) -> bool:
    return not node.get("deleted") and node.get("review_result") is not False


def is_preference(record: dict[str, Any], columns: dict[str, str] | None = None) -> bool:
    """A pair of a chosen and a rejected answer (any layout, `columns` applied)."""
    try:
        mapped = _mapped(record, columns or {})
    except RecordProblem:
        return False
    return ("chosen" in mapped and "rejected" in mapped) or _is_openai_preference(mapped)


def detect_format(record: dict[str, Any]) -> str | None:
    layouts: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("preference", ("chosen", "rejected")),
        ("preference", ("preferred_output", "non_preferred_output")),
        ("messages", ("messages",)),
        ("gemini", ("contents",)),
        ("xtuner", ("conversation",)),
        ("sharegpt", ("conversations",)),
        ("prompt_completion", ("prompt", "completion")),
        ("instruction", ("instruction", "output")),
    )
    for name, keys in layouts:
        if all(k in record for k in keys):
            return name
    for name, (keys, _) in PRESETS.items():  # the most specific layout first: dolly before instruction_response
        if all(k in record for k in keys) and not (name == "instruction_response" and "context" in record):
            return name
    return TEXT if TEXT in record else None


def to_example(record: dict[str, Any], data_format: str | FormatOptions, path: Path | str, line: int) -> Example:
    """Convert one record; raise DataError naming file, line and field when it does not fit."""
    options = data_format if isinstance(data_format, FormatOptions) else FormatOptions(data_format)
    mapping = dict(options.columns)
    try:
        record = _mapped(record, options.columns)
        _refuse_unsupported(record, options)
        fmt = (detect_format(record) if options.data_format == "auto" else options.data_format) or _unknown(record)
        if fmt in PRESETS:
            record, mapping = _mapped(record, PRESETS[fmt][1]), {**mapping, **PRESETS[fmt][1]}
        return _convert(record, fmt, options, str(path), line)
    except NonText as exc:
        if options.skip_non_text:
            raise Skipped("non-text content (skip_non_text)") from None
        raise DataError(
            path,
            line,
            f"{exc}; loraops trains on text only. Remove such records, or set "
            "skip_non_text=true to drop them (they are counted)",
        ) from None
    except RecordProblem as exc:
        raise DataError(path, line, _in_their_names(str(exc), mapping)) from None


def _in_their_names(message: str, mapping: dict[str, str]) -> str:
    """A problem with a mapped field, told with the record's own field name."""
    for target, source in mapping.items():
        message = message.replace(f"`{target}`", f"`{source}`")
    return message


def _mapped(record: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """The record with its fields renamed as `columns` says (loraops name -> the record's name)."""
    if not columns:
        return record
    missing = [f"`{source}` (columns.{target})" for target, source in columns.items() if source not in record]
    if missing:
        have = ", ".join(f"`{k}`" for k in sorted(record)) or "no fields"
        raise RecordProblem(f"missing field {', '.join(missing)}; the record has {have}")
    renamed = {target: record[source] for target, source in columns.items()}
    return {**{k: v for k, v in record.items() if k not in columns.values()}, **renamed}


def _refuse_unsupported(record: dict[str, Any], options: FormatOptions) -> None:
    if any(record.get(k) for k in _MEDIA_FIELDS):
        field_name = next(k for k in _MEDIA_FIELDS if record.get(k))
        raise NonText(f"the record has `{field_name}`: it is multimodal")
    if options.preference in ("chosen", PAIRS, LABELLED):
        return
    if "chosen" in record and "rejected" in record:
        raise RecordProblem(
            "this is preference data (`chosen`/`rejected`, for DPO); loraops trains supervised "
            "fine-tuning. Set preference=chosen to train on the chosen answers only"
        )
    if _is_openai_preference(record):
        raise RecordProblem(
            "this is OpenAI's preference data (`preferred_output`/`non_preferred_output`, for DPO); loraops "
            "trains supervised fine-tuning. Set preference=chosen to train on the preferred answers only"
        )
    if _is_kto(record):
        raise RecordProblem(
            "this is preference data (KTO: a `label` on each completion); loraops trains "
            "supervised fine-tuning. Set preference=chosen to train on the completions "
            "labelled true only (the others are skipped and counted)"
        )


def _is_openai_preference(record: dict[str, Any]) -> bool:
    """OpenAI's preference fine-tuning format: `input`, `preferred_output`, `non_preferred_output`."""
    return "preferred_output" in record and "non_preferred_output" in record


def _is_kto(record: dict[str, Any]) -> bool:
    """KTO data: one answer per record with a bool `label` (TRL: prompt/completion; LLaMA-Factory: messages)."""
    return isinstance(record.get("label"), bool) and any(
        k in record for k in ("completion", "messages", "conversations")
    )


# Field names that say which side of an exchange a field holds, for the mapping a record most likely needs.
_ASKING = ("prompt", "question", "query", "instruction", "input", "problem", "human", "user", "source", "request")
_ANSWERING = ("completion", "answer", "response", "output", "solution", "target", "reply", "assistant", "gpt")
_SHOWN_FIELDS = 8


def _unknown(record: dict[str, Any]) -> str:
    """Cannot tell the format: the mapping that would work when the fields say it, or what the record holds."""
    keys = sorted(record)
    shown = ", ".join(f"`{k}`" for k in keys[:_SHOWN_FIELDS]) + (
        f" and {len(keys) - _SHOWN_FIELDS} more" if len(keys) > _SHOWN_FIELDS else ""
    )
    turns = [
        k for k in keys if isinstance(record[k], list) and record[k] and all(isinstance(t, dict) for t in record[k])
    ]
    if turns:
        fix = _nested_advice(turns[0], record[turns[0]])
    elif typos := _misspelt(keys):
        fix = "; ".join(f"`{key}` looks like `{known}` misspelt" for key, known in typos)
    else:
        asking = _field_like(record, _ASKING)
        answering = _field_like(record, _ANSWERING, exclude=asking)
        fix = (
            f"this mapping reads it: columns='{{prompt: {asking}, completion: {answering}}}'"
            if asking and answering
            else "map the question and answer fields with columns='{prompt: QUESTION_FIELD, completion: ANSWER_FIELD}'"
        )
    raise RecordProblem(
        f"cannot tell the format of a record with fields {shown or 'none'}: no known layout "
        f"(messages, conversations, prompt+completion, instruction+output, question+answer, text) fits; {fix}"
    )


def _nested_advice(key: str, items: list[dict[str, Any]]) -> str:
    """A field holding a list of objects: turns `columns` can point at, or a shape it cannot rename."""
    inner = sorted({name for item in items for name in item})
    if {"role", "content"} <= set(inner) or {"from", "value"} <= set(inner):
        return f"it looks like a conversation: columns='{{messages: {key}}}'"
    return (
        f"`{key}` holds a list of objects with keys {', '.join(inner[:_SHOWN_FIELDS])}, which `columns` cannot "
        "rename (it maps top-level fields): write the records as `messages` with role/content turns"
    )


def _misspelt(keys: list[str]) -> list[tuple[str, str]]:
    """Fields one or two letters away from a known layout's field name."""
    import difflib

    known = [*COLUMN_TARGETS, "question", "answer", "response", "context"]
    found = [(key, difflib.get_close_matches(key, known, n=1, cutoff=0.8)) for key in keys if key not in known]
    return [(key, match[0]) for key, match in found if match]


def _field_like(record: dict[str, Any], names: tuple[str, ...], exclude: str | None = None) -> str | None:
    """The record's text field whose name contains one of `names` (the earliest name wins)."""
    for name in names:
        for key in sorted(record):
            if key != exclude and isinstance(record[key], str) and name in key.lower():
                return key
    return None


def _convert(record: dict[str, Any], fmt: str, options: FormatOptions, path: str, line: int) -> Example:
    if options.preference in (PAIRS, LABELLED):
        return _preference_example(record, fmt, options, path, line)
    if "chosen" in record and "rejected" in record:
        turns = _chosen(record)
    elif _is_openai_preference(record):
        turns = _preferred(record)
    elif fmt == TEXT:
        return Example([{"role": TEXT, "content": content_text(_field(record, TEXT), TEXT)}], TEXT, path, line)
    elif _is_kto(record) and not record["label"]:
        raise Skipped("completion labelled false (preference=chosen)")
    elif fmt == "prompt_completion" and options.prompt_completion == "continuation" and _plain_pair(record):
        text = [{"role": PROMPT_ROLE, "content": _text(record, "prompt")}]
        return Example([*text, {"role": "assistant", "content": _text(record, "completion")}], fmt, path, line)
    else:
        turns = _CONVERTERS[fmt if fmt in _CONVERTERS else _base(fmt)](record)
    notes = (
        [LOOKS_CONTINUED]
        if fmt == "prompt_completion" and _plain_pair(record) and record["completion"][:1].isspace()
        else []
    )
    messages = _with_system(record, turns.messages, options.system_prompt, notes)
    shift = len(messages) - len(turns.messages)
    _check_order(messages)
    if any(m["role"] == "assistant" and not (m["content"].strip() or m.get("tool_calls")) for m in messages):
        # Trained, it would teach an end of turn at once; as context, it shows an answer that is not there.
        raise Skipped("an empty assistant turn")
    notes += [EMPTY_USER for m in messages if m["role"] == "user" and not m["content"].strip()]
    if options.reasoning == "drop":
        messages = [{k: v for k, v in m.items() if k != REASONING} for m in messages]
    untrained = frozenset(i + shift for i in turns.untrained)
    tools, masked = parse_tools(record.get("tools")), options.reasoning == "mask"
    return Example(messages, fmt, path, line, untrained, tools, masked, tuple(notes), frozenset(turns.unread))


def _preference_example(record: dict[str, Any], fmt: str, options: FormatOptions, path: str, line: int) -> Example:
    """A pair: the conversation up to its chosen answer, and the rejected answer; or a KTO labelled answer."""
    labelled, options = options.preference == LABELLED, replace(options, preference="chosen")
    if _is_kto(record) and not labelled:
        raise RecordProblem(
            "this record is one answer with a true/false `label` (KTO data), and this method trains on pairs of a "
            "chosen and a rejected answer: set method=kto, or bring pairs"
        )
    if _is_kto(record):
        example = _side(record, "completion", {**record, "label": True}, fmt, options, path, line)
        answer_from = max(i for i, m in enumerate(example.messages) if m["role"] != "assistant") + 1
        return replace(example, answer_from=answer_from, label=record["label"])
    sides = ("preferred_output", "non_preferred_output") if _is_openai_preference(record) else ("chosen", "rejected")
    if sides[0] not in record or sides[1] not in record:
        raise RecordProblem(
            "preference methods train on pairs of a `chosen` and a `rejected` answer (or, with method=kto, answers "
            "with a true/false `label`); this record has neither. Train it with method=sft, or map its fields "
            "with columns={chosen: ..., rejected: ...}"
        )
    chosen = _side(record, sides[0], record, fmt, options, path, line)
    rejected = _side(record, sides[1], {**record, sides[0]: record[sides[1]]}, fmt, options, path, line)
    start = shared_length(chosen.messages, rejected.messages)
    answers = (chosen.messages[start:], rejected.messages[start:])
    if not answers[0] or not answers[1]:
        raise RecordProblem(f"the `{sides[0]}` and `{sides[1]}` answers are the same: a pair needs two answers")
    if answers[0][0]["role"] != "assistant" or answers[1][0]["role"] != "assistant":
        raise RecordProblem(
            f"`{sides[0]}` and `{sides[1]}` differ before their answers (turn {start + 1}, a "
            f"{chosen.messages[start]['role']} turn): the two answers of a pair reply to the same prompt"
        )
    return replace(chosen, answer_from=start, rejected=tuple(answers[1]))


def _side(
    record: dict[str, Any], side: str, read: dict[str, Any], fmt: str, options: FormatOptions, path: str, line: int
) -> Example:
    """One answer of a preference record, read as preference=chosen reads the chosen one."""
    try:
        return _convert(read, fmt, options, path, line)
    except Skipped as skip:
        raise RecordProblem(f"the `{side}` answer is empty ({skip.reason})") from None


def shared_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many leading items two sequences share: the turns of a pair's implicit prompt (HH-RLHF), or the
    tokens both renderings of a prompt agree on."""
    shared = 0
    while shared < min(len(a), len(b)) and a[shared] == b[shared]:
        shared += 1
    return shared


def _plain_pair(record: dict[str, Any]) -> bool:
    """TRL's standard prompt-completion (two strings), as opposed to its conversational one (lists of turns)."""
    return isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str)


def _base(fmt: str) -> str:
    return "prompt_completion" if "prompt" in PRESETS[fmt][1] else "instruction"


def _field(record: dict[str, Any], key: str) -> Any:
    if key not in record:
        raise RecordProblem(f"missing field `{key}`")
    return record[key]


def _text(record: dict[str, Any], key: str, optional: bool = False) -> str:
    if optional and record.get(key) is None:
        return ""
    return content_text(_field(record, key), key)


def _from_messages(record: dict[str, Any]) -> Turns:
    return parse_turns(_field(record, "messages"), "messages")


def _from_sharegpt(record: dict[str, Any]) -> Turns:
    return parse_turns(_field(record, "conversations"), "conversations")


def _from_prompt_completion(record: dict[str, Any]) -> Turns:
    prompt, completion = _field(record, "prompt"), _field(record, "completion")
    if isinstance(prompt, list) or isinstance(completion, list):  # TRL's conversational prompt/completion
        asked = (
            parse_turns(prompt, "prompt") if isinstance(prompt, list) else Turns([{"role": "user", "content": prompt}])
        )
        answer = (
            parse_turns(completion, "completion")
            if isinstance(completion, list)
            else Turns([{"role": "assistant", "content": content_text(completion, "completion")}])
        )
        # Only the completion trains, as in TRL: assistant turns inside the prompt are context.
        context = {i for i, m in enumerate(asked.messages) if m["role"] == "assistant"}
        offset = len(asked.messages)
        return Turns(asked.messages + answer.messages, context | {i + offset for i in answer.untrained})
    return Turns(
        [
            {"role": "user", "content": _text(record, "prompt")},
            {"role": "assistant", "content": _text(record, "completion")},
        ]
    )


def _from_instruction(record: dict[str, Any]) -> Turns:
    # An empty instruction (real Alpaca-style data has them) must not leave the prompt starting with blank lines.
    parts = [p for p in (_text(record, "instruction"), _text(record, "input", optional=True)) if p.strip()]
    if not parts:
        raise RecordProblem("`instruction` and `input` are both empty: there is no question to answer")
    return Turns(
        [{"role": "user", "content": "\n\n".join(parts)}, {"role": "assistant", "content": _text(record, "output")}]
    )


def _chosen(record: dict[str, Any]) -> Turns:
    """Preference data with preference=chosen: the prompt and its chosen answer."""
    chosen = record["chosen"]
    for key in ("conversations", "messages"):  # LLaMA-Factory: the prompt's turns, then one chosen turn
        if key in record:
            answer = [chosen] if isinstance(chosen, dict) else chosen
            return parse_turns([*record[key], *answer] if isinstance(record[key], list) else record[key], key)
    if isinstance(chosen, list) and "prompt" not in record:  # implicit prompt: the whole chat is in chosen
        return parse_turns(chosen, "chosen")
    return _from_prompt_completion({"prompt": record.get("prompt", ""), "completion": chosen})


def _preferred(record: dict[str, Any]) -> Turns:
    """OpenAI's preference data with preference=chosen: the input's turns, then the preferred answer."""
    asked = record.get("input")
    if not isinstance(asked, dict) or not isinstance(asked.get("messages"), list):
        raise RecordProblem("`input` must be an object with the prompt's `messages`")
    answer = record["preferred_output"]
    return parse_turns([*asked["messages"], *(answer if isinstance(answer, list) else [answer])], "input.messages")


GEMINI_ROLES = {"user": "user", "model": "assistant"}


def _from_gemini(record: dict[str, Any]) -> Turns:
    """Vertex AI / Gemini tuning data: `contents` of {role, parts}, the system turn in `systemInstruction`."""
    contents = _field(record, "contents")
    if not isinstance(contents, list) or not contents:
        raise RecordProblem("field `contents` must be a non-empty list of {role, parts} turns")
    messages = []
    system = record.get("systemInstruction") or record.get("system_instruction")
    if system is not None:
        messages.append({"role": "system", "content": _gemini_text(system, "systemInstruction")})
    for i, turn in enumerate(contents):
        where = f"contents[{i}]"
        role = GEMINI_ROLES.get(turn.get("role", "user")) if isinstance(turn, dict) else None
        if role is None:
            raise RecordProblem(f"`{where}.role` must be user or model")
        messages.append({"role": role, "content": _gemini_text(turn, where)})
    return Turns(messages)


def _gemini_text(turn: Any, where: str) -> str:
    parts = turn.get("parts") if isinstance(turn, dict) else None
    if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
        raise RecordProblem(f"`{where}.parts` must be a non-empty list of parts")
    for j, part in enumerate(parts):
        if "text" not in part:
            kind = next(iter(part), "empty")
            if kind in ("inlineData", "fileData"):
                raise NonText(f"`{where}.parts[{j}]` is {kind}: the record is multimodal")
            raise RecordProblem(
                f"`{where}.parts[{j}]` is a {kind} part; loraops reads Gemini's text parts only "
                "(for tool calls, write the records in OpenAI's `messages` form with `tool_calls`)"
            )
    return "".join(content_text(p["text"], f"{where}.parts[{j}].text") for j, p in enumerate(parts))


def _from_xtuner(record: dict[str, Any]) -> Turns:
    """XTuner's rounds: `conversation` of {system (first round), input, output}; each output trains."""
    rounds = _field(record, "conversation")
    if not isinstance(rounds, list) or not rounds or not all(isinstance(r, dict) for r in rounds):
        raise RecordProblem("field `conversation` must be a non-empty list of {input, output} rounds")
    messages: list[Message] = []
    for i, item in enumerate(rounds):
        where = f"conversation[{i}]"
        if item.get("system"):
            messages.append({"role": "system", "content": content_text(item["system"], f"{where}.system")})
        messages.append({"role": "user", "content": content_text(item.get("input"), f"{where}.input")})
        messages.append({"role": "assistant", "content": content_text(item.get("output"), f"{where}.output")})
    return Turns(messages)


_CONVERTERS = {
    "messages": _from_messages,
    "sharegpt": _from_sharegpt,
    "prompt_completion": _from_prompt_completion,
    "instruction": _from_instruction,
    "gemini": _from_gemini,
    "xtuner": _from_xtuner,
}


def _with_system(record: dict[str, Any], turns: list[Message], default: str | None, notes: list[str]) -> list[Message]:
    """The conversation with its system turn: its own, the record's `system` field, or `default`. An empty
    system turn is not kept (training would see an empty system block where inference sees the default)."""
    if turns and turns[0]["role"] == "system":
        if turns[0]["content"].strip():
            return turns
        notes.append(
            EMPTY_SYSTEM_FILLED if (_text(record, "system", optional=True) or default) else EMPTY_SYSTEM_REMOVED
        )
        turns = turns[1:]
    system = _text(record, "system", optional=True) or default
    return ([{"role": "system", "content": system}] if system else []) + turns


def _check_order(messages: list[Message]) -> None:
    if not any(m["role"] == "assistant" for m in messages):
        raise RecordProblem("the conversation has no assistant turn, so nothing to learn")
    first = next((i for i, m in enumerate(messages) if m["role"] != "system"), None)
    if first is not None and messages[first]["role"] == "assistant":
        raise RecordProblem(
            f"the conversation starts with an assistant turn (turn {first}); add the user turn it answers"
        )
    if any(p in m["content"] for m in messages for p in _MEDIA_PLACEHOLDERS):
        raise NonText("a turn holds an <image>/<video>/<audio> placeholder: the record is multimodal")
