"""Trainer callbacks and loss bookkeeping.

Losses are read back from `trainer.state.log_history`, which checkpoints carry, so a resumed
run reports the losses of its whole life, not just of the part after the resume.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

from loraops.records import METRICS

log = logging.getLogger(__name__)
_SHOWN = ("loss", *METRICS)


class LossLogCallback(TrainerCallback):
    """Log loss/lr/grad-norm lines to the run log, and log at every epoch end so that
    logging windows never straddle two epochs."""

    def __init__(self) -> None:
        self.tokens_at_start = 0  # after a resume, the restored state already counts earlier tokens
        self.step_at_start = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.tokens_at_start = int(state.num_input_tokens_seen or 0)
        self.step_at_start = int(state.global_step or 0)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        control.should_log = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            log.info(
                "step %d/%d epoch %.2f loss %.4f lr %.3g grad_norm %.3f",
                state.global_step,
                state.max_steps,
                state.epoch or 0,
                float(logs["loss"]),
                float(logs.get("learning_rate", 0)),
                float(logs.get("grad_norm", 0)),
            )
        if logs and "eval_loss" in logs:
            scores = "  ".join(f"{k[5:]} {v:.4g}" for k, v in logs.items() if k.startswith("eval_") and k[5:] in _SHOWN)
            log.info(
                "validation at step %d epoch %.2f: %s (%.1f s)",
                state.global_step,
                state.epoch or 0,
                scores,
                float(logs.get("eval_runtime", 0)),
            )


def loss_entries(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The logged training losses: step, epoch, loss, learning rate, and how many steps each log covers."""
    entries, last_step = [], 0
    for item in log_history:
        if "loss" in item and "step" in item:
            entry = {
                "step": item["step"],
                "epoch": item.get("epoch", 0.0),
                "loss": float(item["loss"]),
                "steps": item["step"] - last_step,
            }
            if "learning_rate" in item:  # the report draws the schedule from metrics.json
                entry["learning_rate"] = float(item["learning_rate"])
            entries.append(entry)
            last_step = item["step"]
    return entries


def epoch_losses(entries: list[dict[str, float]]) -> list[float]:
    """Step-weighted mean loss of each (possibly partial) epoch, in order."""
    sums: dict[int, list[float]] = {}
    for entry in entries:
        epoch = max(0, int(round(entry["epoch"], 6) - 1e-9))  # a log at epoch 1.0 closes epoch index 0
        total = sums.setdefault(epoch, [0.0, 0.0])
        total[0] += entry["loss"] * entry["steps"]
        total[1] += entry["steps"]
    return [round(s / n, 6) for _, (s, n) in sorted(sums.items()) if n]
