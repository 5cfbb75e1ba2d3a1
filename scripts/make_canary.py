#!/usr/bin/env python3
"""Write data/eval/canary.jsonl: general requests, answered by the untouched default model itself.

The canary split measures forgetting: its references are what the base model says (greedy, with the
eval defaults), so the base model scores 100% on it by construction, and a fine-tuned model that
drifts away from its general behaviour loses points there. Regenerate with `make canary` after
changing the default model or the eval generation defaults; the result is deterministic on CPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from loraops import environment
from loraops.config import EvalConfig
from loraops.data.tokenize import ensure_chat_template
from loraops.eval.generate import GenerationSettings, generate
from loraops.models import load_causal_lm, load_tokenizer, prepare_default_model

PROMPTS = [
    "What is the capital of France?", "What is the capital of Japan?", "What is the capital of Italy?",
    "How many days are in a week?", "How many legs does a spider have?", "What color is the sky on a clear day?",
    "What is 7 times 8?", "What is 15 plus 27?", "What is the square root of 81?",
    "Name the largest planet in our solar system.", "Which gas do plants absorb from the air?",
    "What is the boiling point of water in Celsius?", "Who wrote Romeo and Juliet?",
    "Translate 'thank you' into French.", "Translate 'good morning' into Spanish.",
    "What is the opposite of 'hot'?", "Give a synonym for 'happy'.", "What is the plural of 'mouse'?",
    "Name three primary colors.", "What do bees make?", "Which ocean is the largest?",
    "What is the freezing point of water in Fahrenheit?", "How many continents are there?",
    "What is H2O commonly called?", "Write one sentence about the moon.", "Write a haiku about rain.",
    "What does a thermometer measure?", "Which animal is known as the king of the jungle?",
    "What is the main language spoken in Brazil?", "How many hours are in a day?",
    "Spell the word 'necessary' backwards.", "What shape has three sides?",
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/eval/canary.jsonl"))
    args = parser.parse_args()
    defaults = EvalConfig()
    env = environment.detect(False)
    path = str(prepare_default_model())
    tokenizer = load_tokenizer(path)
    ensure_chat_template(tokenizer)
    model = load_causal_lm(path, env.torch_dtype).eval()
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    answers = generate(model, tokenizer, prompts, GenerationSettings(defaults.max_new_tokens), defaults.batch_size)
    lines = [json.dumps({"prompt": p, "completion": a.text}, ensure_ascii=False) for p, a in zip(PROMPTS, answers)]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} canary examples to {args.out}")


if __name__ == "__main__":
    main()
