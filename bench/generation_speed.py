#!/usr/bin/env python3
"""Batched generation against one-prompt-at-a-time `generate`, side by side on the same prompts.

Reports generated tokens per second for both and their ratio (machines are noisy, so compare
the ratio, not the absolute figures), and checks that greedy outputs agree. The model generates in the
precision eval uses (bf16 on GPUs that have it, fp32 on CPU), and every setting is run once untimed first,
so compilation (the static cache's, on CUDA) is not counted as generation.

    .venv/bin/python bench/generation_speed.py [--model outputs/runs/latest] [--prompts 32] [--batch-size 16,32]
    .venv/bin/python bench/generation_speed.py --baseline --model-name default [--static-cache]   # no run needed
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from loraops import environment
from loraops.eval.data import load_split
from loraops.eval.generate import GenerationSettings, generate
from loraops.eval.targets import resolve_target
from loraops.loading import load_for_inference
from loraops.models import resolve_model_path


def timed(model, tokenizer, prompts, settings, batch_size):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    outputs = generate(model, tokenizer, prompts, settings, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - started
    return outputs, sum(o.new_tokens for o in outputs) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="outputs/runs/latest", help="run or adapter folder")
    parser.add_argument("--baseline", action="store_true", help="benchmark the run's base model instead")
    parser.add_argument("--model-name", help="with --baseline and no run: the base model (e.g. default)")
    parser.add_argument("--split", default="data/eval/test.jsonl")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", default="16,32", help="one or more, comma-separated (e.g. 16,32)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument(
        "--static-cache",
        action="store_true",
        help="also time the batched runs with a static KV cache (transformers compiles the "
        "decoding step with it on CUDA)",
    )
    args = parser.parse_args()

    target = resolve_target(args.model, args.model_name, args.baseline)
    env = environment.detect(bf16_requested=True)
    model, tokenizer = load_for_inference(resolve_model_path(target.base_model), target.adapter_dir, env, merge=True)
    prompts = [e.prompt for e in load_split(Path(args.split))][: args.prompts]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    generate(model, tokenizer, prompts[:2], settings, batch_size=1, progress=False)  # warm-up

    single, single_tps = timed(model, tokenizer, prompts, settings, 1)
    print(
        f"model: {target.name} on {env.device_name}, {env.precision}, {len(prompts)} prompts, "
        f"max_new_tokens {args.max_new_tokens}"
    )
    print(f"one at a time : {single_tps:8.1f} generated tokens/s")
    caches = [None, "static"] if args.static_cache else [None]
    for cache in caches:
        model.generation_config.cache_implementation = cache
        for size in (int(b) for b in args.batch_size.split(",")):
            timed(model, tokenizer, prompts, settings, size)  # untimed: compiles what this setting compiles
            batched, batched_tps = timed(model, tokenizer, prompts, settings, size)
            same = sum(a.text == b.text for a, b in zip(single, batched))
            label = f"batch of {size}" + (f", {cache} cache" if cache else "")
            print(
                f"{label:<14}: {batched_tps:8.1f} generated tokens/s, {batched_tps / single_tps:5.2f}x, "
                f"same greedy output for {same}/{len(prompts)} prompts"
            )


if __name__ == "__main__":
    main()
