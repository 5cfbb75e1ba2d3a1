"""Batched generation: same greedy outputs as one prompt at a time, merged or not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support import EVAL_PROMPTS

from loraops.environment import Environment
from loraops.eval.generate import GenerationSettings, decode_answer, encode_prompts, generate
from loraops.loading import load_for_inference

CPU = Environment("cpu", "cpu", "fp32", None)
SETTINGS = GenerationSettings(max_new_tokens=12)


def test_batched_equals_one_at_a_time(tiny_model_dir: Path, tiny_adapter_dir: Path) -> None:
    model, tokenizer = load_for_inference(str(tiny_model_dir), tiny_adapter_dir, CPU, merge=True)
    single = generate(model, tokenizer, EVAL_PROMPTS, SETTINGS, batch_size=1, progress=False)
    batched = generate(model, tokenizer, EVAL_PROMPTS, SETTINGS, batch_size=4, progress=False)
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(g.new_tokens > 0 for g in single)


def test_merged_adapter_gives_the_same_outputs(tiny_model_dir: Path, tiny_adapter_dir: Path) -> None:
    def answers(adapter: Path | None, merge: bool) -> list[Any]:
        model, tokenizer = load_for_inference(str(tiny_model_dir), adapter, CPU, merge)
        return generate(model, tokenizer, EVAL_PROMPTS, SETTINGS, batch_size=8, progress=False)

    merged, unmerged, base = answers(tiny_adapter_dir, True), answers(tiny_adapter_dir, False), answers(None, True)
    assert [g.text for g in merged] == [g.text for g in unmerged]
    assert [g.text for g in merged] != [g.text for g in base]  # the adapter really is applied


def test_prompts_are_rendered_like_training(tokenizer: Any) -> None:
    from loraops.data.tokenize import encode

    ids = encode_prompts(tokenizer, [EVAL_PROMPTS[0]])[0]
    trained = encode(tokenizer, EVAL_PROMPTS[0] + [{"role": "assistant", "content": "x"}], 512)
    assert trained.input_ids[: len(ids)] == ids


def test_decoding_stops_at_the_first_stop_token(tokenizer: Any) -> None:
    eos = tokenizer.eos_token_id
    hello = tokenizer("hello there", add_special_tokens=False)["input_ids"]
    stopped = decode_answer(tokenizer, hello + [eos] + hello, [eos])
    assert (stopped.text, stopped.stopped, stopped.new_tokens) == ("hello there", True, len(hello) + 1)
    runaway = decode_answer(tokenizer, hello, [eos])
    assert (runaway.stopped, runaway.new_tokens) == (False, len(hello))
