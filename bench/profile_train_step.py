#!/usr/bin/env python3
"""Where a loraops training step spends its time: torch.profiler over a few steps, top operators by self CPU time.

Builds the Trainer exactly as `loraops train` does (the defaults, or the given overrides), runs a
warm-up step, then profiles the next steps and prints each operator's share of the profiled time.

    .venv/bin/python bench/profile_train_step.py [--steps 3] [key=value ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    import torch
    from transformers import TrainerCallback

    import loraops.train as loraops_train
    from loraops.config import TrainConfig, load_config

    profiler = torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU],
        schedule=torch.profiler.schedule(wait=0, warmup=1, active=args.steps, repeat=1),
    )

    class Step(TrainerCallback):
        def on_step_end(self, *a: Any, **k: Any) -> None:
            profiler.step()

    base = loraops_train.LoraopsTrainer

    class Profiled(base):  # type: ignore[misc, valid-type]
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            self.add_callback(Step())

    loraops_train.LoraopsTrainer = Profiled  # type: ignore[misc]
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(
            TrainConfig,
            Path("configs"),
            "train",
            [
                f"max_steps={args.steps + 2}",
                "eval_strategy=no",
                "save_strategy=no",
                f"output_dir={out}",
                *args.overrides,
            ],
        )
        with profiler:
            loraops_train.train(cfg)
    events = profiler.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{'operator':<60} share of self CPU time")
    for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(f"{event.key[:60]:<60} {100 * event.self_cpu_time_total / total:5.1f}%")


if __name__ == "__main__":
    main()
