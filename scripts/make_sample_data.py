#!/usr/bin/env python3
"""Generate the sample dataset: requests in plain English mapped to formulas of Tabula,
an invented spreadsheet DSL that no pretrained model can know.

Deterministic (fixed seed): rerunning it rewrites byte-identical files.
Training files use all three formats; eval files are prompt/completion with argument
combinations never seen in training, plus an adversarial split with reworded requests.
Preference pairs (for method=dpo|orpo|kto: configs/train_dpo.yaml) prefer the right formula over a
plausible wrong one: a function of the same shape, another fill rule, arguments swapped, or a value off by
one; they go to
preference/ (training and its dev split) and eval/preference.jsonl (held out, formulas never trained).

    python scripts/make_sample_data.py [--out data]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

SYSTEM = "You translate spreadsheet requests into Tabula formulas. Answer with the formula only."

# name: (signature, meaning, request templates, adversarial templates, argument kinds)
FUNCTIONS = {
    "FLOWROLL": (
        "FLOWROLL(range, window)",
        "the rolling sum of each cell and the window-1 cells above it",
        [
            "Rolling sum of {r} over a window of {n}",
            "Compute a {n}-row rolling total for {r}",
            "Give me the running window sum of {r} with window {n}",
        ],
        ["With a window of {n}, I need rolling totals on {r}"],
        ("r", "n"),
    ),
    "PEAKSHIFT": (
        "PEAKSHIFT(range, offset)",
        "the value found offset cells after the largest value in the range",
        [
            "Value {n} cells after the peak of {r}",
            "Find the peak of {r} and return the value {n} rows later",
            "What comes {n} positions after the maximum in {r}",
        ],
        ["Look {n} rows past wherever {r} is highest"],
        ("r", "n"),
    ),
    "GAPFILL": (
        "GAPFILL(range, mode)",
        'the range with blank cells filled by mode: "prev", "next", "zero" or "mean"',
        ["Fill the blanks in {r} using {m}", "Fill empty cells of {r} with the {m} rule", "Replace gaps in {r} by {m}"],
        ["{r} has holes; patch them with {m}"],
        ("r", "m"),
    ),
    "SPLITWEIGH": (
        "SPLITWEIGH(values, weights)",
        "the weighted average of values using weights",
        [
            "Weighted average of {r} with weights {w}",
            "Average {r} weighted by {w}",
            "Compute the weighted mean of {r} using the weights in {w}",
        ],
        ["Using {w} as the weights, what is the mean of {r}"],
        ("r", "w"),
    ),
    "STREAKLEN": (
        "STREAKLEN(range, value)",
        "the length of the longest run of consecutive cells equal to value",
        [
            "Longest streak of {n} in {r}",
            "How many times in a row does {n} appear at most in {r}",
            "Find the longest run of {n} in {r}",
        ],
        ["In {r}, the biggest consecutive block of {n}"],
        ("r", "n"),
    ),
    "DRIFT": (
        "DRIFT(range, lag)",
        "each cell minus the cell lag rows above it",
        [
            "Difference of {r} against {n} rows earlier",
            "Change in {r} over a lag of {n}",
            "Compute the drift of {r} with lag {n}",
        ],
        ["How much did {r} move compared to {n} rows back"],
        ("r", "n"),
    ),
    "CLAMPBAND": (
        "CLAMPBAND(range, low, high)",
        "the range with every value clamped into [low, high]",
        [
            "Clamp {r} between {lo} and {hi}",
            "Limit the values of {r} to the band {lo} to {hi}",
            "Keep {r} within {lo} and {hi}",
        ],
        ["Nothing in {r} may go under {lo} or above {hi}"],
        ("r", "lo", "hi"),
    ),
    "ROUNDTO": (
        "ROUNDTO(range, step)",
        "each value rounded to the nearest multiple of step",
        [
            "Round {r} to the nearest multiple of {n}",
            "Round every value in {r} to steps of {n}",
            "Snap {r} to multiples of {n}",
        ],
        ["Make {r} land on the {n} grid"],
        ("r", "n"),
    ),
}
MODES = ["prev", "next", "zero", "mean"]
COLUMNS = "ABCDEFGHJK"


def make_range(rng: random.Random) -> str:
    col = rng.choice(COLUMNS)
    start = rng.randint(1, 20)
    return f"{col}{start}:{col}{start + rng.randint(5, 60)}"


def make_args(rng: random.Random, kinds: tuple[str, ...]) -> dict[str, str]:
    args: dict[str, str] = {}
    for kind in kinds:
        if kind == "r":
            args["r"] = make_range(rng)
        elif kind == "w":
            args["w"] = make_range(rng)
        elif kind == "n":
            args["n"] = str(rng.randint(2, 30))
        elif kind == "m":
            args["m"] = rng.choice(MODES)
        elif kind == "lo":
            args["lo"] = str(rng.randint(0, 40))
        elif kind == "hi":
            args["hi"] = str(int(args["lo"]) + rng.randint(10, 90))
    return args


def formula(name: str, args: dict[str, str]) -> str:
    order = {"GAPFILL": ["r", "m"], "SPLITWEIGH": ["r", "w"], "CLAMPBAND": ["r", "lo", "hi"]}.get(name, ["r", "n"])
    parts = [f'"{args[k]}"' if k == "m" else args[k] for k in order]
    return f"={name}({', '.join(parts)})"


def request(rng: random.Random, templates: list[str], args: dict[str, str]) -> str:
    return rng.choice(templates).format(**args)


def unique_pairs(
    rng: random.Random, count: int, seen: set[str], templates_of: int = 2, avoid: list[str] | None = None
) -> list[tuple[str, str, str]]:
    """(function, request, formula) with formulas not in `seen`, and requests no near copy of one in `avoid`;
    adds the formulas to `seen`."""
    pairs: list[tuple[str, str, str]] = []
    names = list(FUNCTIONS)
    while len(pairs) < count:
        name = names[len(pairs) % len(names)]
        _, _, templates, adversarial, kinds = FUNCTIONS[name]
        args = make_args(rng, kinds)
        target = formula(name, args)
        if target in seen:
            continue
        seen.add(target)
        pool = adversarial if templates_of == 3 else templates
        ask = request(rng, pool, args)
        if avoid and any(near_copy(ask, other) for other in avoid):
            continue
        pairs.append((name, ask, target))
    return pairs


def near_copy(a: str, b: str) -> bool:
    """Word 3-gram Jaccard of at least 0.8: what `loraops compare` counts as an eval example the training
    data nearly holds (leakage)."""
    grams = [{" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))} for words in (a.split(), b.split())]
    return len(grams[0] & grams[1]) >= 0.8 * len(grams[0] | grams[1])


def explain(name: str) -> str:
    signature, meaning, *_ = FUNCTIONS[name]
    return f"{signature} returns {meaning}."


def training_records(rng: random.Random, seen: set[str]) -> dict[str, list[dict]]:
    pairs = unique_pairs(rng, 260, seen)
    messages, prompt_completion, instruction = [], [], []
    for i, (name, ask, target) in enumerate(pairs):
        if i % 3 == 0:
            turns = [{"role": "system", "content": SYSTEM}] if i % 2 else []
            turns += [{"role": "user", "content": ask}, {"role": "assistant", "content": target}]
            if i % 9 == 0:
                turns += [
                    {"role": "user", "content": f"What does {name} do?"},
                    {"role": "assistant", "content": explain(name)},
                ]
            messages.append({"messages": turns})
        elif i % 3 == 1:
            prompt_completion.append({"prompt": ask, "completion": target})
        else:
            instruction.append(
                {"instruction": "Write the Tabula formula for this request.", "input": ask, "output": target}
            )
    for name in FUNCTIONS:
        instruction.append({"instruction": f"Explain the Tabula function {name}.", "output": explain(name)})
        prompt_completion.append(
            {"prompt": f"What is the signature of the Tabula function {name}?", "completion": FUNCTIONS[name][0]}
        )
    return {
        "train_messages.jsonl": messages,
        "train_prompt_completion.jsonl": prompt_completion,
        "train_instruction.jsonl": instruction,
    }


def eval_records(rng: random.Random, seen: set[str]) -> dict[str, list[dict]]:
    as_pc = lambda pairs: [{"prompt": ask, "completion": target} for _, ask, target in pairs]  # noqa: E731
    return {
        "eval/test.jsonl": as_pc(unique_pairs(rng, 64, seen)),
        "eval/dev.jsonl": as_pc(unique_pairs(rng, 32, seen)),
        "eval/adversarial.jsonl": as_pc(unique_pairs(rng, 32, seen, templates_of=3)),
    }


# Functions taking (range, number): a request for one is easily answered with another.
SAME_SHAPE = ["FLOWROLL", "PEAKSHIFT", "STREAKLEN", "DRIFT", "ROUNDTO"]


def wrong_formula(rng: random.Random, name: str, target: str, i: int) -> str:
    """A plausible wrong answer to the request whose right answer is `target`."""
    inside = target[len(name) + 2 : -1]
    args = inside.split(", ")
    if name == "GAPFILL":  # the wrong fill rule
        mode = args[1].strip('"')
        return f'={name}({args[0]}, "{rng.choice([m for m in MODES if m != mode])}")'
    if name in ("SPLITWEIGH", "CLAMPBAND"):  # values and weights, or low and high, swapped
        return f"={name}({', '.join([args[0], *reversed(args[1:])] if len(args) > 2 else reversed(args))})"
    if i % 4 == 3:  # off by one
        return f"={name}({args[0]}, {int(args[1]) + rng.choice([-1, 1])})"
    return f"={rng.choice([n for n in SAME_SHAPE if n != name])}({inside})"  # a function of the same shape


def preference_records(rng: random.Random, seen: set[str], trained: list[str]) -> dict[str, list[dict]]:
    """Pairs for training, its dev split, and a held-out eval split whose requests no training request nearly
    repeats (`trained`: every request the training files ask)."""

    def pairs(count: int, avoid: list[str] | None = None) -> list[dict]:
        out: list[dict[str, Any]] = []
        for i, (name, ask, target) in enumerate(unique_pairs(rng, count, seen, avoid=avoid)):
            trained.append(ask)
            wrong = wrong_formula(rng, name, target, i)
            if i % 2:  # TRL's conversational form, with the system prompt
                prompt = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ask}]
                out.append(
                    {
                        "prompt": prompt,
                        "chosen": [{"role": "assistant", "content": target}],
                        "rejected": [{"role": "assistant", "content": wrong}],
                    }
                )
            else:  # TRL's standard form: three strings
                out.append({"prompt": ask, "chosen": target, "rejected": wrong})
        return out

    return {
        "preference/train.jsonl": pairs(128),
        "preference/eval/dev.jsonl": pairs(24),
        "eval/preference.jsonl": pairs(48, avoid=list(trained)),
    }


def requests(files: dict[str, list[dict]]) -> list[str]:
    """What the training records ask: user turns, prompts, instructions' inputs."""
    asked = []
    for records in files.values():
        for r in records:
            turns = [m["content"] for m in r.get("messages", []) if m["role"] == "user"]
            asked += turns or [r.get("prompt") or r.get("input") or r["instruction"]]
    return asked


def write(out: Path, files: dict[str, list[dict]]) -> None:
    for name, records in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        print(f"{path}: {len(records)} records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data"))
    args = parser.parse_args()
    rng = random.Random(20261125)
    seen: set[str] = set()
    training = training_records(rng, seen)
    write(args.out, training)
    write(args.out, eval_records(rng, seen))
    write(args.out, preference_records(rng, seen, requests(training)))


if __name__ == "__main__":
    main()
