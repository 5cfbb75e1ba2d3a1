"""Structured output: replies held to JSON, any object or one a JSON schema describes, by constrained decoding
with xgrammar (the grammar engine vLLM and SGLang use): at each step the tokens that cannot continue valid
output are masked before sampling, so the reply parses whatever the model's weights would have said.

Chosen by measurement (bench/structured_output.py, README): xgrammar and outlines-core both cost nothing
measurable per token on the default model, but outlines-core compiles a schema to a regular expression, which
cannot hold JSON nested deeper than a few levels (so not `json_object`), and lm-format-enforcer 0.11's
transformers integration does not import with transformers 5.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from loraops.errors import LoraopsError

INSTALL = "pip install 'loraops[structured]'"


class SchemaError(LoraopsError):
    """A JSON schema the grammar compiler cannot take."""


def available() -> bool:
    try:
        import xgrammar  # noqa: F401
    except ImportError:
        return False
    return True


class Grammars:
    """The model's grammar compiler, made on first use (it reads the whole vocabulary once); xgrammar caches
    what it compiles, so a schema sent again costs nothing."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> None:
        self.tokenizer, self.vocab_size, self.stop_token_ids = tokenizer, vocab_size, stop_token_ids
        self._compiler: Any = None
        self._lock = threading.Lock()

    def json(self, schema: dict[str, Any] | None, strict: bool = True) -> Any:
        """The compiled grammar of one JSON object: any (`schema` None), or one matching `schema`. Compact
        separators: a small model left free to add whitespace may add it until max_tokens."""
        text = json.dumps({"type": "object"} if schema is None else schema)
        strict = strict and schema is not None
        return self._compiled(
            lambda compiler: compiler.compile_json_schema(text, any_whitespace=False, strict_mode=strict)
        )

    def json_between(self, before: str, schema: dict[str, Any], after: str, strict: bool = True) -> Any:
        """The compiled grammar of `before`, one JSON value matching `schema`, then `after`: a tool call in the
        model's own markup (`<tool_call>` JSON `</tool_call>`)."""
        import xgrammar as xgr

        def compile_(compiler: Any) -> Any:
            value = xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, strict_mode=strict)
            literal = lambda text: xgr.Grammar.from_ebnf(f"root ::= {json.dumps(text)}")  # noqa: E731
            return compiler.compile_grammar(xgr.Grammar.concat(literal(before), value, literal(after)))

        return self._compiled(compile_)

    def _compiled(self, compile_: Callable[[Any], Any]) -> Any:
        with self._lock:
            compiler = self._compiler = self._compiler or self._new_compiler()
            try:
                return compile_(compiler)
            except (RuntimeError, ValueError, TypeError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                raise SchemaError(f"the JSON schema cannot be used: {first}") from None

    def _new_compiler(self) -> Any:
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(
            self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=self.stop_token_ids
        )
        return xgr.GrammarCompiler(info)


def logits_processor(grammar: Any) -> Any:
    """A transformers logits processor holding one generation to `grammar` (one use only)."""
    import xgrammar as xgr

    return xgr.contrib.hf.LogitsProcessor(grammar)
