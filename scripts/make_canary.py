#!/usr/bin/env python3
"""Write data/train_general.jsonl: general requests answered by the untouched default model itself.

Trained on the DSL alone, the adapter forgets how to answer anything else (it answered "What is the
capital of France?" with a formula), which the guarded `canary` eval split catches. Replaying the base
model's own answers to other general requests during training keeps that ability. Regenerate with
`make canary` after changing the default model or the eval generation defaults; deterministic on CPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from loraops import environment
from loraops.config import EvalConfig
from loraops.data.tokenize import ensure_chat_template
from loraops.eval.generate import GenerationSettings, generate
from loraops.loading import load_causal_lm, load_tokenizer
from loraops.models import prepare_default_model

# Replay: other general requests, answered by the base model too, mixed into the training data so
# that the adapter keeps answering general requests as the base model did (and not with a formula).
REPLAY_PROMPTS = [
    "What is the capital of Spain?",
    "What is the capital of Germany?",
    "What is the capital of Canada?",
    "How many months are in a year?",
    "How many wheels does a bicycle have?",
    "What color are bananas?",
    "What is 6 times 9?",
    "What is 12 plus 30?",
    "What is 100 divided by 4?",
    "Name a planet close to the sun.",
    "What do cows drink?",
    "Who painted the Mona Lisa?",
    "Translate 'hello' into German.",
    "Translate 'cat' into Spanish.",
    "What is the opposite of 'big'?",
    "Give a synonym for 'fast'.",
    "What is the plural of 'child'?",
    "Name two fruits.",
    "What do you call a baby dog?",
    "Which season comes after winter?",
    "How many minutes are in an hour?",
    "What is the chemical symbol for gold?",
    "Write one sentence about the sun.",
    "Write a short poem about snow.",
    "What does a compass show?",
    "What is the tallest animal?",
    "What language is spoken in Mexico?",
    "How many sides does a square have?",
    "Spell the word 'apple' backwards.",
    "What is ice made of?",
    "Which organ pumps blood?",
    "What is the largest desert?",
    "Tell me a fun fact about octopuses.",
    "What is the speed of light, roughly?",
    "Why do leaves change color in autumn?",
    "Describe a rainbow in one sentence.",
    "What is a noun?",
    "What is the first letter of the alphabet?",
    "How do you say 'please' in Italian?",
    "What do fish breathe with?",
    "What is the capital of Australia?",
    "How many players are on a soccer team?",
    "What is 9 minus 4?",
    "Name a musical instrument with strings.",
    "What is the color of grass?",
    "What does a chef do?",
    "What is the main ingredient of bread?",
    "How many hearts does an octopus have?",
]


def answered(model: Any, tokenizer: Any, prompts: list[str]) -> list[str]:
    defaults = EvalConfig()  # the eval defaults, so the answers are the ones `eval_baseline` would see
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    generations = generate(
        model, tokenizer, conversations, GenerationSettings(defaults.max_new_tokens), defaults.batch_size
    )
    return [g.text for g in generations]


def write(path: Path, prompts: list[str], answers: list[str]) -> None:
    lines = [json.dumps({"prompt": p, "completion": a}, ensure_ascii=False) for p, a in zip(prompts, answers)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} examples to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data"))
    args = parser.parse_args()
    env = environment.detect(False)
    path = str(prepare_default_model())
    tokenizer = load_tokenizer(path)
    ensure_chat_template(tokenizer)
    model = load_causal_lm(path, env.torch_dtype).eval()
    write(args.data / "train_general.jsonl", REPLAY_PROMPTS, answered(model, tokenizer, REPLAY_PROMPTS))


if __name__ == "__main__":
    main()
