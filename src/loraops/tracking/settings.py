"""The tracking settings of a command: `tracking` and `mlflow_experiment` of its config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MLFLOW_MODES = ("mlflow", "both")
TENSORBOARD_MODES = ("tensorboard", "both")


@dataclass(frozen=True)
class Settings:
    mode: str = "tensorboard"
    experiment: str = "loraops"

    @classmethod
    def of(cls, cfg: Any) -> Settings:
        """From any config with `tracking` and `mlflow_experiment` (train, eval, compare)."""
        return cls(cfg.tracking, cfg.mlflow_experiment)

    @property
    def mlflow(self) -> bool:
        return self.mode in MLFLOW_MODES

    @property
    def tensorboard(self) -> bool:
        return self.mode in TENSORBOARD_MODES
