#!/usr/bin/env python3
"""What holding replies to JSON costs, and which library holds them: constrained decoding side by side.

On the same prompts, greedy, the default model generates unconstrained, then held to a JSON schema by each
grammar library installed (xgrammar, which `loraops serve` uses; outlines-core and lm-format-enforcer when
present: `pip install outlines lm-format-enforcer`). Reports each library's schema compile time, its time
per generated token as a ratio to unconstrained generation measured in the same run (machines are noisy:
compare ratios), and how many replies parse and match the schema.

    .venv/bin/python bench/structured_output.py [--model default] [--prompts 8] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from loraops import environment
from loraops.eval.generate import stop_token_ids
from loraops.loading import load_for_inference
from loraops.models import resolve_model_path

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
LIMIT = [64]  # max_new_tokens, as set on the command line
PEOPLE = [("Ada", 36, "math and poetry"), ("Alan", 41, "running and codes"), ("Grace", 85, "ships and compilers")]
PEOPLE += [("Linus", 28, "kernels and diving"), ("Edsger", 72, "proofs and pens"), ("Barbara", 60, "types")]
PEOPLE += [("Donald", 80, "organs and books"), ("Frances", 55, "compilers and hiking")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    LIMIT[0] = args.max_new_tokens
    env = environment.detect(False)
    model, tokenizer = load_for_inference(resolve_model_path(args.model), None, env, merge=False)
    prompts = [_prompt(tokenizer, *PEOPLE[i % len(PEOPLE)]) for i in range(args.prompts)]
    run = _runner(model, tokenizer, args.max_new_tokens)
    print(f"{args.model} on {env.device_name}, {args.prompts} prompts, greedy, up to {args.max_new_tokens} tokens")
    base = _measure("unconstrained", lambda: None, lambda state: None, run, prompts)
    for name, (setup, make) in _libraries(model, tokenizer).items():
        _measure(name, setup, make, run, prompts, base)


def _prompt(tokenizer: Any, name: str, age: int, likes: str) -> Any:
    text = f"Describe {name}, {age}, who likes {likes}, as JSON with name, age and tags."
    messages = [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)


def _runner(model: Any, tokenizer: Any, max_new_tokens: int) -> Callable[[Any, Any], tuple[float, int, str]]:
    import torch
    from transformers import LogitsProcessorList

    stops = stop_token_ids(model, tokenizer)

    def run(inputs: Any, processor: Any) -> tuple[float, int, str]:
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id or stops[0],
                logits_processor=LogitsProcessorList([processor] if processor else []),
            )
        new = out[0, inputs["input_ids"].shape[1] :]
        return time.perf_counter() - started, len(new), tokenizer.decode(new, skip_special_tokens=True)

    return run


def _measure(
    name: str,
    setup: Callable[[], Any],
    make: Callable[[Any], Any],
    run: Any,
    prompts: list[Any],
    base: float | None = None,
) -> float:
    started = time.perf_counter()
    state = setup()
    compile_s = time.perf_counter() - started
    run(prompts[0], make(state))  # untimed: first-call work is not generation
    per_token, valid, cut = [], 0, 0
    for inputs in prompts:
        started = time.perf_counter()
        processor = make(state)
        _, tokens, text = run(inputs, processor)
        per_token.append((time.perf_counter() - started) / max(tokens, 1))  # the processor's making counts
        valid += _matches(text)
        cut += tokens >= LIMIT[0]
    median = statistics.median(per_token)
    ratio = f"{median / base:.2f}x unconstrained" if base else "1.00x"
    print(
        f"  {name:24s} compile {compile_s:5.2f} s  per token {ratio:>22s}  "
        f"schema-valid {valid}/{len(prompts)}, cut at the limit {cut}",
        flush=True,
    )
    return median


def _matches(text: str) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return False
    types = {"name": str, "age": int, "tags": list}
    return (
        isinstance(value, dict) and set(value) == set(types) and all(isinstance(value[k], t) for k, t in types.items())
    )


def _libraries(model: Any, tokenizer: Any) -> dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]]:
    found: dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]] = {}
    try:
        from loraops.structured import Grammars, logits_processor

        grammars = Grammars(tokenizer, model.config.vocab_size, stop_token_ids(model, tokenizer))
        found["xgrammar (loraops)"] = (lambda: grammars.json(SCHEMA), logits_processor)
    except ImportError:
        print("  xgrammar: not installed (pip install 'loraops[structured]')")
    try:
        import outlines
        from outlines.backends import get_json_schema_logits_processor

        wrapped = outlines.from_transformers(model, tokenizer)
        setup = lambda: get_json_schema_logits_processor("outlines_core", wrapped, json.dumps(SCHEMA))  # noqa: E731
        found["outlines-core"] = (setup, lambda processor: processor.reset() or processor)
    except ImportError:
        print("  outlines-core: not installed (pip install outlines)")
    try:
        import lmformatenforcer.integrations.transformers  # noqa: F401
    except ImportError as exc:
        print(f"  lm-format-enforcer: cannot be used here ({exc})")
    return found


if __name__ == "__main__":
    main()
