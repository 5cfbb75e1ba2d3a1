"""Which adapter a run kept, and why: the validation curve, the best evaluation, early stopping.

Everything here is read back from the Trainer's state, which checkpoints carry, so a resumed run
reports the curve and the best step of its whole life.
"""

from __future__ import annotations

from typing import Any

from loraops.config import TrainConfig
from loraops.config.schema import REWARD_METRICS
from loraops.records import ValidationSummary


def validation_curve(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """One point per evaluation: step, epoch, validation loss and generation metrics, seconds spent."""
    return [
        {
            "step": item["step"],
            "epoch": round(item.get("epoch", 0.0), 4),
            **{_named(k[5:]): v for k, v in item.items() if k.startswith("eval_") and not k.endswith(_SPEED_KEYS)},
            "seconds": item.get("eval_runtime", 0.0),
        }
        for item in log_history
        if "eval_loss" in item
    ]


_SPEED_KEYS = ("_runtime", "_samples_per_second", "_steps_per_second")
_LOGGED_AS = {logged: name for name, logged in REWARD_METRICS.items()}


def _named(key: str) -> str:
    """loraops' name of a validation metric (TRL's rewards/accuracies is reward_accuracy)."""
    return _LOGGED_AS.get(key, key)


def stopped_early(state: Any, early_stopper: Any, cfg: TrainConfig) -> dict[str, Any] | None:
    """Where and why early stopping ended the run; None when it ran its course."""
    if early_stopper is None or early_stopper.early_stopping_patience_counter < early_stopper.early_stopping_patience:
        return None
    return {
        "step": state.global_step,
        "reason": f"validation {cfg.select_metric} did not improve by more than {cfg.early_stopping_min_delta:g} "
        f"in {cfg.early_stopping_patience} evaluations in a row",
    }


def summary(state: Any, cfg: TrainConfig, early_stopper: Any, session_from_step: int) -> ValidationSummary:
    """The `validation` section of metrics.json."""
    curve = validation_curve(state.log_history)
    best = next((p for p in curve if p["step"] == state.best_global_step), None)
    seconds = sum(p["seconds"] for p in curve if p["step"] > session_from_step)
    return ValidationSummary(
        select_metric=cfg.select_metric,
        higher_is_better=cfg.select_metric != "loss",
        best={"step": best["step"], "epoch": best["epoch"], "value": best[cfg.select_metric]} if best else None,
        stopped_early=stopped_early(state, early_stopper, cfg),
        curve=curve,
        seconds=round(seconds, 2),
    )
