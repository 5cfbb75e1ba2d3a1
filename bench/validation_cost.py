#!/usr/bin/env python3
"""What validation during training costs, and what it found: the curve, the kept step, its share of the run.

Trains with the given overrides (the shipped defaults when none), then reads the run's metrics.json:
each evaluation's step, validation loss, generation metrics and seconds, the step kept in model/,
and the seconds spent validating as a share of the run's wall time (one run, so the share is a
ratio measured side by side, not an absolute time).

    .venv/bin/python bench/validation_cost.py [key=value ...]        # train, then report
    .venv/bin/python bench/validation_cost.py --run outputs/runs/NAME  # report on a finished run
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from loraops.runs import RunDir, find_run


def _mean_loss(history: list[dict[str, float]], after: int, upto: int) -> str:
    """Step-weighted mean of the logged training losses over the steps (after, upto]."""
    total, steps, last = 0.0, 0.0, 0.0
    for entry in history:
        covered = entry["step"] - last
        if after < entry["step"] <= upto:
            total, steps = total + entry["loss"] * covered, steps + covered
        last = entry["step"]
    return f"{total / steps:.4f}" if steps else "-"


def report(run: RunDir) -> str:
    metrics = run.read_metrics().as_dict()
    validation = metrics.get("validation")
    if not validation:
        return f"{run.path}: the run did not validate (no validation data, or eval_strategy=no)"
    curve = validation["curve"]
    shown = [k for k in curve[0] if k not in ("step", "epoch", "seconds")]
    lines = [
        f"run {run.name}: {metrics['global_steps']} steps, {metrics['runtime_s']:.0f} s",
        "| step | epoch | train loss since the last validation | "
        + " | ".join(f"validation {k}" for k in shown)
        + " | seconds |",
        "|" + " --- |" * (len(shown) + 4),
    ]
    previous = 0
    for point in curve:
        train = _mean_loss(metrics.get("loss_history", []), previous, point["step"])
        values = " | ".join(f"{point[k]:.4f}" if k == "loss" else f"{point[k]:.2f}" for k in shown)
        lines.append(f"| {point['step']} | {point['epoch']:.2f} | {train} | {values} | {point['seconds']:.1f} |")
        previous = point["step"]
    best = validation["best"]
    lines.append(
        f"kept: step {best['step']} ({validation['select_metric']} {best['value']:.4f})"
        + (f"; stopped early at step {validation['stopped_early']['step']}" if validation["stopped_early"] else "")
    )
    lines.append(
        f"validation: {validation['seconds']:.1f} s of {metrics['runtime_s']:.1f} s "
        f"= {100 * validation['share_of_runtime']:.1f}% of the run"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="report on this finished run instead of training one")
    parser.add_argument("overrides", nargs="*", help="train overrides, key=value")
    args = parser.parse_args()
    if args.run is None:
        loraops = Path(sys.executable).with_name("loraops")
        status = subprocess.call([str(loraops), "train", *args.overrides])
        if status:
            return status
    run, _ = find_run(args.run or "outputs/runs/latest")
    if run is None:
        print(f"no run folder at {args.run}", file=sys.stderr)
        return 2
    print(report(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
