"""Trainer callbacks: loss lines in the run log and per-epoch loss bookkeeping."""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

log = logging.getLogger(__name__)


class EpochLossCallback(TrainerCallback):
    """Collect logged losses, forcing a log at each epoch end so windows never straddle epochs."""

    def __init__(self) -> None:
        self.logged: list[dict[str, float]] = []  # {"step", "epoch", "loss", "steps"}
        self._last_step = 0

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        control.should_log = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            steps = state.global_step - self._last_step
            self.logged.append({"step": state.global_step, "epoch": state.epoch, "loss": logs["loss"], "steps": steps})
            self._last_step = state.global_step
            log.info("step %d/%d epoch %.2f loss %.4f lr %.3g grad_norm %.3f", state.global_step, state.max_steps,
                     state.epoch or 0, float(logs["loss"]), float(logs.get("learning_rate", 0)), float(logs.get("grad_norm", 0)))  # fmt: skip

    def epoch_losses(self) -> list[float]:
        """Step-weighted mean loss of each (possibly partial) epoch, in order."""
        sums: dict[int, list[float]] = {}
        for entry in self.logged:
            epoch = max(0, int(round(entry["epoch"], 6) - 1e-9))  # epoch 1.0 ends epoch index 0
            total = sums.setdefault(epoch, [0.0, 0.0])
            total[0] += entry["loss"] * entry["steps"]
            total[1] += entry["steps"]
        return [round(s / n, 6) for _, (s, n) in sorted(sums.items()) if n]
